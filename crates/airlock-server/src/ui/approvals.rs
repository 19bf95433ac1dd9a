//! One approval: what the agent wants to run and why, what changed since its previous call, the
//! policy's reasons, the votes and the session's timeline. Voting on it is in `vote`; the plan a
//! plan proposal's approval shows in place of its arguments is drawn by `plans`.

use airlock_core::{Action, Approval, ApprovalStatus, Decision, Verdict};
use airlock_store::StoredEvent;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::Ui;
use super::html::{Nav, absolute, expiry, json_diff, needs, pretty, risk_badge, shell, status_badge, when};
use super::invisible::{contains_hidden, reveal, value_contains_hidden, warning};
use super::plans::{
    Proposal, lease_link, named_like_proposal, not_a_proposal, plan_links, proposal_of, proposal_panels,
};
use super::respond::{failure_page, page, to_login};
use super::session::Viewer;
use super::vote::{vote_eligibility, vote_form};
use crate::engine::{self, PlanView};

/// Most journal events shown in a detail page's timeline (the latest ones).
const TIMELINE_LIMIT: usize = 200;

/// The query of a detail page: `voted` after a vote from it.
#[derive(Deserialize)]
pub(super) struct DetailQuery {
    voted: Option<String>,
}

/// What a detail page shows above the facts.
pub(super) enum Flash {
    Ok(String),
    Error(String),
}

/// Everything the detail page shows of one approval.
pub(super) struct Detail {
    pub(super) approval: Approval,
    pub(super) action: Action,
    pub(super) owner: Option<String>,
    pub(super) session: Option<airlock_core::Session>,
    pub(super) previous: Option<Action>,
    pub(super) events: Vec<StoredEvent>,
    /// `[approvals] allow_requester`: whether the session's requester may vote.
    pub(super) allow_requester: bool,
    /// Humans whose TOTP codes are locked now, with the end of each lock.
    pub(super) mfa_locks: Vec<(String, DateTime<Utc>)>,
    /// The session's plans.
    pub(super) plans: Vec<PlanView>,
    /// The plan version this action proposed, when the journal says it proposed one.
    pub(super) proposal: Option<Proposal>,
}

/// The approval, its action, the session and its events, and the previous call of the same tool.
pub(super) async fn load_detail(ui: &Ui, id: &str) -> Result<Detail, engine::Error> {
    let (approval, action) = ui.engine().approval(id).await?;
    let store = ui.engine().store();
    let session = store.session(&approval.session_id).await?;
    let previous = store
        .session_actions(&approval.session_id)
        .await?
        .into_iter()
        .filter(|a| a.tool == action.tool && a.seq < action.seq)
        .max_by_key(|a| a.seq);
    let events = store.events(&approval.session_id).await?;
    let owner = ui.owner(&approval.agent_id);
    let allow_requester = ui.engine().config().approvals.allow_requester;
    let mfa_locks = ui.engine().mfa_locks();
    let plans = ui.engine().plans(&approval.session_id, None).await?;
    let proposal = proposal_of(&action, &plans);
    Ok(Detail { approval, action, owner, session, previous, events, allow_requester, mfa_locks, plans, proposal })
}

/// The session's journal, the latest [`TIMELINE_LIMIT`] events, with this action marked.
fn timeline(d: &Detail, now: DateTime<Utc>) -> Markup {
    let skipped = d.events.len().saturating_sub(TIMELINE_LIMIT);
    html! {
        @if skipped > 0 { p.small { "The " (skipped) " earlier events are in the journal." } }
        ol.timeline {
            @for e in d.events.iter().skip(skipped) {
                @let entry = crate::timeline::entry(e);
                @let action_id = entry.get("action_id").and_then(Value::as_str);
                @let approval_id = entry.get("approval_id").and_then(Value::as_str);
                @let summary = entry.get("summary").and_then(Value::as_str).unwrap_or("");
                @let at = DateTime::parse_from_rfc3339(&e.at).ok().map(|t| t.with_timezone(&Utc));
                li.this[action_id == Some(d.action.id.as_str())] {
                    div {
                        span.kind { (e.kind) }
                        " · "
                        @if let Some(t) = at { span.small { (when(t, now)) } } @else { span.small { (e.at) } }
                    }
                    div {
                        @match approval_id {
                            Some(a) if a != d.approval.id && e.kind == "approval.requested" => {
                                a href={ "/ui/approvals/" (a) } { (reveal(summary)) }
                            }
                            _ => { (reveal(summary)) }
                        }
                    }
                }
            }
        }
    }
}

/// The detail page of one approval, with `flash` above the facts and `comment` kept in the form.
pub(super) fn detail_page(viewer: &Viewer, d: &Detail, pending: usize, flash: Option<Flash>, comment: &str) -> Markup {
    let now = Utc::now();
    let a = &d.approval;
    let act = &d.action;
    let body = html! {
        p.small { a href=(if a.status == ApprovalStatus::Pending { "/ui/inbox" } else { "/ui/history" }) { "← back" } }
        div.head-row {
            h1 { (reveal(&act.tool)) }
            div {
                span #status .badge.{ "st-" (a.status.as_str()) } { (a.status.as_str()) }
                " "
                (risk_badge(act.decision.risk))
            }
        }
        p.sub {
            (a.agent_id) " asks to run this"
            @if let Some(o) = &d.owner { " (owner: " (o) ")" }
            ", requested " (when(a.created_at, now))
            @if a.status == ApprovalStatus::Pending { ", expires " (expiry(a.expires_at, now)) }
            "."
        }
        @match &flash {
            Some(Flash::Ok(m)) => div.flash.ok role="status" { (m) },
            Some(Flash::Error(m)) => div.flash.error role="alert" { (m) },
            None => {}
        }
        (warning(&hidden_parts(d)))
        @if d.proposal.is_none() && named_like_proposal(act) { (not_a_proposal()) }
        div.grid {
            div {
                (request_panels(d, now))
                (policy_panel(&act.decision))
            }
            div {
                (decision_panel(viewer, d, comment, now))
                (action_panel(d))
                section.panel aria-labelledby="h-timeline" {
                    h2 #h-timeline { "Session timeline" }
                    (timeline(d, now))
                }
            }
        }
    };
    shell(&act.tool, Some(viewer), Nav::None, pending, body)
}

/// The parts of an action that hold invisible or direction-changing characters, each as the
/// start of the warning's sentence.
fn hidden_parts(d: &Detail) -> Vec<&'static str> {
    let act = &d.action;
    let task = d.session.as_ref().map(|s| s.task.as_str()).unwrap_or_default();
    [
        (contains_hidden(&act.tool), "The tool name contains"),
        (value_contains_hidden(&act.arguments), "The arguments contain"),
        (contains_hidden(&act.justification), "The justification contains"),
        (contains_hidden(task), "The session's task contains"),
    ]
    .into_iter()
    .filter_map(|(hidden, part)| hidden.then_some(part))
    .collect()
}

/// What the agent asks for: its justification, the arguments, and the change since the previous
/// call of the same tool in the session.
fn request_panels(d: &Detail, now: DateTime<Utc>) -> Markup {
    let act = &d.action;
    if let Some(p) = &d.proposal {
        return proposal_panels(p, act, now);
    }
    let args = pretty(&act.arguments);
    html! {
        section.panel aria-labelledby="h-why" {
            h2 #h-why { "Justification" }
            @if act.justification.is_empty() {
                p.small { "The agent gave no justification." }
            } @else {
                p.justification { (reveal(&act.justification)) }
            }
        }
        section.panel aria-labelledby="h-args" {
            h2 #h-args { "Arguments" }
            pre.json { (reveal(&args)) }
        }
        section.panel aria-labelledby="h-diff" {
            h2 #h-diff { "Change since the previous call" }
            @match &d.previous {
                Some(prev) => {
                    p.legend {
                        "Against "
                        @match &prev.approval_id {
                            Some(apr) => a href={ "/ui/approvals/" (apr) } { "#" (prev.seq) },
                            None => { "#" (prev.seq) }
                        }
                        " (" (prev.id) ", " (when(prev.created_at, now)) ", "
                        (prev.status.as_str().replace('_', " ")) "): "
                        span.mono { "-" } " removed, " span.mono { "+" } " added."
                    }
                    @let old = pretty(&prev.arguments);
                    @if old == args {
                        p.small { "Same arguments as that call." }
                    } @else {
                        (json_diff(&old, &args))
                    }
                }
                None => { p.small { "This is the first call of " code { (reveal(&act.tool)) } " in the session." } }
            }
        }
    }
}

/// What policy decided, and why.
fn policy_panel(decision: &Decision) -> Markup {
    html! {
        section.panel aria-labelledby="h-policy" {
            h2 #h-policy { "Policy" }
            dl.facts {
                dt { "Decision" } dd { (decision.effect.as_str().replace('_', " ")) " by " (decision.decided_by) }
                dt { "Revision" } dd.mono { (decision.policy_revision) }
                @if let Some(cost) = decision.cost_usd { dt { "Cost" } dd { "$" (format!("{cost:.2}")) } }
            }
            h2.spaced { "Reasons" }
            ul.reasons {
                @for r in &decision.reasons { li { code { (reveal(&r.rule)) } " " (reveal(&r.msg)) } }
                @if decision.reasons.is_empty() { li.small { "No reason was recorded." } }
            }
            @if !decision.warnings.is_empty() {
                h2.spaced { "Warnings (not enforced)" }
                ul.reasons { @for r in &decision.warnings { li { code { (reveal(&r.rule)) } " " (reveal(&r.msg)) } } }
            }
        }
    }
}

/// What the approval needs, the votes so far, and the vote form or why the viewer can't vote.
fn decision_panel(viewer: &Viewer, d: &Detail, comment: &str, now: DateTime<Utc>) -> Markup {
    let a = &d.approval;
    html! {
        section.panel aria-labelledby="h-decide" {
            h2 #h-decide { "Decision" }
            dl.facts {
                dt { "Needs" } dd { (needs(a)) }
                dt { "Expires" } dd {
                    @if a.status == ApprovalStatus::Pending { (expiry(a.expires_at, now)) }
                    @else { time datetime=(a.expires_at.to_rfc3339()) { (absolute(a.expires_at)) } }
                }
                @if let Some(t) = a.resolved_at { dt { "Resolved" } dd { (when(t, now)) } }
            }
            @if !a.votes.is_empty() {
                ul.votes.spaced {
                    @for v in &a.votes {
                        li {
                            strong { (v.human) } " "
                            (status_badge(match v.verdict { Verdict::Approve => "approved", Verdict::Deny => "denied" }))
                            @if v.mfa { " " span.badge.tag { "MFA" } }
                            " " span.small { (when(v.at, now)) }
                            @if !v.comment.is_empty() { div { (reveal(&v.comment)) } }
                        }
                    }
                }
            }
            @let locked = d.mfa_locks.iter().find(|(h, _)| *h == viewer.human.human.id).map(|(_, until)| *until);
            @if let (true, true, Some(until)) = (a.status == ApprovalStatus::Pending, a.requirements.mfa, locked) {
                div.flash.error.spaced {
                    "Your TOTP codes are locked until " (absolute(until)) " after repeated failed codes, so this \
                     approval can't take your vote until then. If you did not mistype them, someone may be guessing \
                     with your token: tell an admin, who can lift the lock."
                }
            } @else if a.status == ApprovalStatus::Pending {
                @match vote_eligibility(&viewer.human, a, d.session.as_ref(), d.allow_requester) {
                    Err(why) => div.flash.note.spaced { (why) },
                    Ok(()) => (vote_form(viewer, d, comment)),
                }
            }
        }
    }
}

/// The ids of the action, approval and session, and the session's task.
fn action_panel(d: &Detail) -> Markup {
    let (a, act) = (&d.approval, &d.action);
    html! {
        section.panel aria-labelledby="h-facts" {
            h2 #h-facts { "Action" }
            dl.facts {
                dt { "Action" } dd.mono { (act.id) " (#" (act.seq) ")" }
                dt { "Status" } dd { (status_badge(act.status.as_str())) }
                dt { "Approval" } dd.mono { (a.id) }
                dt { "Session" } dd.mono { (a.session_id) }
                @if let Some(s) = &d.session {
                    dt { "Task" } dd { (reveal(&s.task)) }
                    @if let Some(who) = &s.on_behalf_of { dt { "On behalf of" } dd { (who) } }
                }
                (plan_links(&d.plans))
                (lease_link(&d.events, &act.id))
                dt { "Digest" } dd.mono { (act.digest) }
            }
        }
    }
}

pub(super) async fn detail(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    let Some(viewer) = ui.viewer(&headers) else { return to_login() };
    let d = match load_detail(&ui, &id).await {
        Ok(d) => d,
        Err(e) => return failure_page(Some(&viewer), &e),
    };
    let flash = q.voted.as_deref().and_then(|v| {
        let did = match v {
            "approve" => "You approved this action.",
            "deny" => "You denied this action.",
            _ => return None,
        };
        let now = match d.approval.status {
            ApprovalStatus::Pending => format!(
                " It has {} of {} approvals and waits for more.",
                d.approval.approvals(),
                d.approval.requirements.quorum
            ),
            status => format!(" The approval is now {status}."),
        };
        Some(Flash::Ok(format!("{did}{now}")))
    });
    let pending = ui.pending_count().await;
    page(StatusCode::OK, detail_page(&viewer, &d, pending, flash, ""))
}

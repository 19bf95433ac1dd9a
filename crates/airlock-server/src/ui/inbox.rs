//! The inbox (pending approvals, the one that expires first on top, refreshed live) and the
//! history (resolved approvals, the latest first).

use airlock_core::{Approval, ApprovalStatus, Verdict};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::html::{Nav, expiry, needs, risk_badge, shell, short, status_badge, when};
use super::invisible::{contains_hidden, reveal, value_contains_hidden};
use super::respond::{error_status, error_text, failure_page, page, to_login};
use super::{LIST_LIMIT, Row, Ui};

/// Whether what the agent sent for this row holds invisible or direction-changing characters.
fn has_hidden(row: &Row) -> bool {
    let a = &row.action;
    contains_hidden(&a.tool) || contains_hidden(&a.justification) || value_contains_hidden(&a.arguments)
}

fn inbox_rows(rows: &[Row], now: DateTime<Utc>) -> Markup {
    html! {
        div hidden data-count=(rows.len()) {}
        @if rows.is_empty() {
            p.empty { "Nothing is waiting for a decision. New approvals appear here by themselves." }
        } @else {
            table.list {
                caption.skip { "Pending approvals" }
                thead {
                    tr {
                        th scope="col" { "Tool" }
                        th scope="col" { "Agent" }
                        th scope="col" { "Owner" }
                        th scope="col" { "Risk" }
                        th scope="col" { "Needs" }
                        th scope="col" { "Requested" }
                        th scope="col" { "Expires" }
                    }
                }
                tbody {
                    @for row in rows {
                        tr data-approval=(row.approval.id) {
                            td.tool data-label="Tool" {
                                a href={ "/ui/approvals/" (row.approval.id) } { (reveal(&row.action.tool)) }
                                @if has_hidden(row) {
                                    " "
                                    span.badge.hidden-chars title="invisible or direction-changing characters: see the details" {
                                        "hidden characters"
                                    }
                                }
                                @if !row.action.justification.is_empty() {
                                    div.small { (reveal(&short(&row.action.justification, 90))) }
                                }
                            }
                            td data-label="Agent" { (row.approval.agent_id) }
                            td data-label="Owner" { (row.owner.as_deref().unwrap_or("—")) }
                            td data-label="Risk" { (risk_badge(row.action.decision.risk)) }
                            td data-label="Needs" { (needs(&row.approval)) }
                            td data-label="Requested" { (when(row.approval.created_at, now)) }
                            td data-label="Expires" { (expiry(row.approval.expires_at, now)) }
                        }
                    }
                }
            }
        }
    }
}

pub(super) async fn inbox(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    let Some(viewer) = ui.viewer(&headers) else { return to_login() };
    let rows = match ui.pending_rows().await {
        Ok(rows) => rows,
        Err(e) => return failure_page(Some(&viewer), &e),
    };
    let now = Utc::now();
    let title = if rows.is_empty() { "Inbox".to_string() } else { format!("({}) Inbox", rows.len()) };
    let body = html! {
        div.head-row {
            h1 { "Pending approvals" }
            span #live .live data-state="off" aria-live="polite" { "not live" }
        }
        p.sub { "Actions held for a human decision, the one that expires first on top." }
        div.panel #inbox-list data-src="/ui/inbox/list" aria-live="polite" { (inbox_rows(&rows, now)) }
    };
    page(StatusCode::OK, shell(&title, Some(&viewer), Nav::Inbox, rows.len(), body))
}

pub(super) async fn inbox_list(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    if ui.viewer(&headers).is_none() {
        return page(StatusCode::UNAUTHORIZED, html! { p.empty { "Signed out." } });
    }
    match ui.pending_rows().await {
        Ok(rows) => page(StatusCode::OK, inbox_rows(&rows, Utc::now())),
        Err(e) => page(error_status(&e), html! { p.empty { (error_text(&e)) } }),
    }
}

fn votes_summary(approval: &Approval) -> Markup {
    html! {
        @if approval.votes.is_empty() {
            span.small { "no votes" }
        }
        @for v in &approval.votes {
            div.small {
                strong { (v.human) } " "
                (match v.verdict { Verdict::Approve => "approved", Verdict::Deny => "denied" })
                @if !v.comment.is_empty() { ": " (reveal(&short(&v.comment, 80))) }
            }
        }
    }
}

pub(super) async fn history(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    let Some(viewer) = ui.viewer(&headers) else { return to_login() };
    let resolved = match ui.engine().approvals(None, LIST_LIMIT).await {
        Ok(all) => all.into_iter().filter(|a| a.status != ApprovalStatus::Pending).collect(),
        Err(e) => return failure_page(Some(&viewer), &e),
    };
    let mut rows = match ui.with_actions(resolved).await {
        Ok(rows) => rows,
        Err(e) => return failure_page(Some(&viewer), &e),
    };
    rows.sort_by(|a, b| {
        let at = |r: &Row| r.approval.resolved_at.unwrap_or(r.approval.created_at);
        at(b).cmp(&at(a))
    });
    let now = Utc::now();
    let pending = ui.pending_count().await;
    let body = html! {
        h1 { "History" }
        p.sub { "Resolved approvals, the latest first." }
        div.panel {
            @if rows.is_empty() {
                p.empty { "No approval has been resolved yet." }
            } @else {
                table.list {
                    caption.skip { "Resolved approvals" }
                    thead {
                        tr {
                            th scope="col" { "Resolved" }
                            th scope="col" { "Outcome" }
                            th scope="col" { "Tool" }
                            th scope="col" { "Agent" }
                            th scope="col" { "Risk" }
                            th scope="col" { "Votes" }
                        }
                    }
                    tbody {
                        @for row in &rows {
                            tr data-approval=(row.approval.id) {
                                td data-label="Resolved" {
                                    (when(row.approval.resolved_at.unwrap_or(row.approval.created_at), now))
                                }
                                td data-label="Outcome" { (status_badge(row.approval.status.as_str())) }
                                td.tool data-label="Tool" {
                                    a href={ "/ui/approvals/" (row.approval.id) } { (reveal(&row.action.tool)) }
                                }
                                td data-label="Agent" { (row.approval.agent_id) }
                                td data-label="Risk" { (risk_badge(row.action.decision.risk)) }
                                td data-label="Votes" { (votes_summary(&row.approval)) }
                            }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, shell("History", Some(&viewer), Nav::History, pending, body))
}

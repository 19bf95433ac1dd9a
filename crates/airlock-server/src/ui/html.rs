//! HTML shared by the pages: the shell around every page, and the formatting of times, badges,
//! JSON and diffs. Every value is spliced in through `maud`, which escapes it.

use airlock_core::{Approval, Risk};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::assets::ASSET_VERSION;
use super::invisible::{reveal, reveal_plain};
use super::session::Viewer;

fn span_text(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// "3m ago".
pub(super) fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds();
    if s < 10 { "just now".to_string() } else { format!("{} ago", span_text(s)) }
}

/// "in 14m", or "expired".
pub(super) fn until(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (t - now).num_seconds();
    if s <= 0 { "expired".to_string() } else { format!("in {}", span_text(s)) }
}

pub(super) fn absolute(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A relative time with the exact one on hover.
pub(super) fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) title=(absolute(t)) { (ago(t, now)) } }
}

/// A countdown to an expiry; the script keeps it running.
pub(super) fn expiry(t: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! { span.expiry data-expires=(t.to_rfc3339()) title=(absolute(t)) { (until(t, now)) } }
}

pub(super) fn risk_badge(risk: Risk) -> Markup {
    html! { span.badge.{ "risk-" (risk.as_str()) } title="risk" { (risk.as_str()) } }
}

pub(super) fn status_badge(status: &str) -> Markup {
    html! { span.badge.{ "st-" (status) } { (status.replace('_', " ")) } }
}

/// "1 of 2 · sre, ops · MFA".
/// What an approval needs and how far it got: `1 approval from `security` (SEC1) and 2 approvals
/// from `sre` (SC2), with MFA · 1 so far`.
pub(super) fn needs(approval: &Approval) -> String {
    format!("{} · {} so far", approval.requirements.describe(), approval.approvals())
}

pub(super) fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

pub(super) fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n).collect::<String>()) }
}

/// A line diff of two pretty-printed JSON documents with three lines of context around changes,
/// hidden characters shown as markers.
pub(super) fn json_diff(old: &str, new: &str) -> Markup {
    use similar::{ChangeTag, TextDiff};
    let diff = TextDiff::from_lines(old, new);
    let groups = diff.grouped_ops(3);
    html! {
        pre.diff aria-label="argument changes" {
            @for (i, group) in groups.iter().enumerate() {
                @if i > 0 { span.gap { "⋯" } }
                @for op in group {
                    @for change in diff.iter_changes(op) {
                        @let line = change.value().trim_end_matches('\n');
                        @match change.tag() {
                            ChangeTag::Delete => span.del { "- " (reveal(line)) },
                            ChangeTag::Insert => span.add { "+ " (reveal(line)) },
                            ChangeTag::Equal => span { "  " (reveal(line)) },
                        }
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    Inbox,
    History,
    None,
}

pub(super) fn shell(title: &str, viewer: Option<&Viewer>, nav: Nav, pending: usize, body: Markup) -> Markup {
    let current = |n: Nav| if n == nav { Some("page") } else { None };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (reveal_plain(title)) " · airlock" }
                link rel="icon" type="image/svg+xml" href="/ui/static/favicon.svg";
                link rel="stylesheet" href={ "/ui/static/airlock.css?v=" (ASSET_VERSION) };
                script src={ "/ui/static/airlock.js?v=" (ASSET_VERSION) } defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui" { "air" span { "lock" } }
                    @if let Some(v) = viewer {
                        nav.main aria-label="Main" {
                            a href="/ui/inbox" aria-current=[current(Nav::Inbox)] {
                                "Inbox"
                                span #inbox-count .count data-n=(pending) aria-label="pending approvals" { (pending) }
                            }
                            a href="/ui/history" aria-current=[current(Nav::History)] { "History" }
                        }
                        div.who {
                            span { "Signed in as " strong { (v.human.human.id) } }
                            form method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(v.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main { (body) }
                footer { "airlock review UI" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now = Utc::now();
        assert_eq!(ago(now - chrono::Duration::seconds(3), now), "just now");
        assert_eq!(ago(now - chrono::Duration::seconds(200), now), "3m ago");
        assert_eq!(ago(now - chrono::Duration::hours(5), now), "5h ago");
        assert_eq!(until(now + chrono::Duration::seconds(900), now), "in 15m");
        assert_eq!(until(now - chrono::Duration::seconds(1), now), "expired");
    }
}

//! The review UI at `/ui`: server-rendered HTML for the humans who approve agents' actions.
//!
//! Everything is served by the binary: pages are `maud` templates compiled into the crate (which
//! escapes every value spliced into them), and one stylesheet and one small script are embedded
//! with `include_str!` and served from `/ui/static`. Pages load nothing from anywhere else, and
//! their `Content-Security-Policy` forbids it.
//!
//! Humans sign in with their airlock token. The token is checked once and never stored: the
//! browser gets a random session id in an `HttpOnly; SameSite=Strict` cookie scoped to `/ui`,
//! mapped in memory to the human for 12 hours (a restart signs everyone out). Every form carries
//! a per-session CSRF token, and a `POST` whose `Origin` (or `Sec-Fetch-Site`) says it came from
//! another site is refused. Agents can't sign in.
//!
//! The UI only reads through the [`Engine`](crate::engine::Engine) and the journal, and votes
//! through [`Engine::vote`](crate::engine::Engine::vote), so the rules (groups, quorum, MFA, vote
//! once, maker-checker) are the same as over the API; the UI shows their refusals as they are.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_core::{Action, Approval, ApprovalStatus, Risk, Role, Verdict};
use airlock_store::StoredEvent;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use serde_json::Value;

use crate::api::AppState;
use crate::config::{HumanConfig, hash_token};
use crate::engine::{self, VoteRequest};

/// Cookie holding the signed-in session id.
const SESSION_COOKIE: &str = "airlock_ui";
/// Cookie holding the sign-in form's CSRF nonce (double-submit) before anyone is signed in.
const LOGIN_COOKIE: &str = "airlock_ui_login";
/// How long a sign-in lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The event stream is closed after this long and the browser reconnects by itself, so that an
/// open tab never holds up a graceful shutdown for longer.
const STREAM_LIFETIME: Duration = Duration::from_secs(30);
/// Most approvals listed on one page.
const LIST_LIMIT: usize = 200;
/// Most journal events shown in a detail page's timeline (the latest ones).
const TIMELINE_LIMIT: usize = 200;
/// Forms are small; anything bigger is refused before it is parsed.
const FORM_LIMIT: usize = 64 * 1024;
/// A failed sign-in answers after this delay, to slow down guessing.
const SIGN_IN_FAILURE_DELAY: Duration = Duration::from_millis(250);

const CSS: &str = include_str!("airlock.css");
const JS: &str = include_str!("airlock.js");
const ICON: &str = include_str!("favicon.svg");
/// Cache-busting suffix for the static files.
const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A signed-in browser.
struct SignedIn {
    human: String,
    csrf: String,
    expires: Instant,
}

/// State of the UI: the API's state plus the signed-in browsers.
#[derive(Clone)]
struct Ui {
    app: AppState,
    sessions: Arc<Mutex<HashMap<String, SignedIn>>>,
}

/// The human behind one request.
struct Viewer {
    human: HumanConfig,
    csrf: String,
}

impl Ui {
    fn engine(&self) -> &engine::Engine {
        &self.app.engine
    }

    fn human(&self, id: &str) -> Option<HumanConfig> {
        self.engine().config().humans.iter().find(|h| h.human.id == id).cloned()
    }

    /// The signed-in human, from the session cookie.
    fn viewer(&self, headers: &HeaderMap) -> Option<Viewer> {
        let sid = cookie(headers, SESSION_COOKIE)?;
        let (human, csrf) = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let s = sessions.get(&sid)?;
            if s.expires <= Instant::now() {
                sessions.remove(&sid);
                return None;
            }
            (s.human.clone(), s.csrf.clone())
        };
        // A human removed from the configuration is signed out.
        Some(Viewer { human: self.human(&human)?, csrf })
    }

    fn sign_in(&self, human: &str) -> Option<String> {
        let sid = random_hex()?;
        let csrf = random_hex()?;
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(sid.clone(), SignedIn { human: human.to_string(), csrf, expires: now + SESSION_TTL });
        Some(sid)
    }

    fn sign_out(&self, headers: &HeaderMap) {
        if let Some(sid) = cookie(headers, SESSION_COOKIE) {
            self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&sid);
        }
    }

    async fn pending_count(&self) -> usize {
        self.engine().approvals(Some(ApprovalStatus::Pending), LIST_LIMIT).await.map(|a| a.len()).unwrap_or(0)
    }

    fn owner(&self, agent_id: &str) -> Option<String> {
        self.engine().config().agents.iter().find(|a| a.agent.id == agent_id).map(|a| a.agent.owner.clone())
    }

    /// Approvals with their actions, in `approvals`' order; an approval whose action is missing is
    /// left out.
    async fn with_actions(&self, approvals: Vec<Approval>) -> Result<Vec<Row>, engine::Error> {
        let mut rows = Vec::with_capacity(approvals.len());
        for approval in approvals {
            if let Some(action) = self.engine().store().action(&approval.action_id).await? {
                let owner = self.owner(&approval.agent_id);
                rows.push(Row { approval, action, owner });
            }
        }
        Ok(rows)
    }

    /// Pending approvals, the one that expires first on top.
    async fn pending_rows(&self) -> Result<Vec<Row>, engine::Error> {
        let approvals = self.engine().approvals(Some(ApprovalStatus::Pending), LIST_LIMIT).await?;
        let mut rows = self.with_actions(approvals).await?;
        rows.sort_by_key(|r| r.approval.expires_at);
        Ok(rows)
    }
}

/// One approval with what the lists show of it.
struct Row {
    approval: Approval,
    action: Action,
    owner: Option<String>,
}

/// The UI's routes, all under `/ui`. Merge it next to the API's router.
pub fn router(state: AppState) -> Router {
    let ui = Ui { app: state, sessions: Arc::new(Mutex::new(HashMap::new())) };
    Router::new()
        .route("/ui", get(root))
        .route("/ui/", get(root))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", axum::routing::post(logout))
        .route("/ui/inbox", get(inbox))
        .route("/ui/inbox/list", get(inbox_list))
        .route("/ui/history", get(history))
        .route("/ui/approvals/{id}", get(detail).post(vote))
        .route("/ui/events", get(events))
        .route("/ui/static/airlock.css", get(css))
        .route("/ui/static/airlock.js", get(js))
        .route("/ui/static/favicon.svg", get(icon))
        .route("/ui/{*rest}", get(not_found))
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .with_state(ui)
}

// ---------------------------------------------------------------------------------------------
// Requests and responses
// ---------------------------------------------------------------------------------------------

fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && !a.is_empty() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether a state-changing request comes from our own pages. Browsers send `Origin` with every
/// form `POST`; when it is there it must name this host. `Sec-Fetch-Site`, when sent, must not say
/// the request came from another site. The CSRF token is checked separately.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"));
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = text(header::ORIGIN) else { return true };
    let Some((_, authority)) = origin.split_once("://") else { return false };
    let forwarded = text(header::HeaderName::from_static("x-forwarded-host"));
    [text(header::HOST), forwarded].into_iter().flatten().any(|host| host.eq_ignore_ascii_case(authority))
}

/// Whether the browser reached us over HTTPS (through a proxy that says so), so cookies can be
/// marked `Secure`. A forged header only makes the cookie stricter.
fn is_https(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"))
        .ok()
}

fn harden(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
}

/// An HTML page (or fragment) with the UI's security headers.
fn page(status: StatusCode, markup: Markup) -> Response {
    let mut response =
        (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], markup.into_string()).into_response();
    harden(&mut response);
    response
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    harden(&mut response);
    response
}

fn to_login() -> Response {
    see_other("/ui/login")
}

fn error_status(e: &engine::Error) -> StatusCode {
    match e {
        engine::Error::NotFound { .. } => StatusCode::NOT_FOUND,
        engine::Error::Forbidden { .. } => StatusCode::FORBIDDEN,
        engine::Error::Conflict(_) => StatusCode::CONFLICT,
        engine::Error::Invalid(_) => StatusCode::BAD_REQUEST,
        engine::Error::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// What the user is told about an engine error: its message, except for journal failures, whose
/// details stay in the log.
fn error_text(e: &engine::Error) -> String {
    match e {
        engine::Error::Store(err) => {
            tracing::error!(error = %err, "journal error in the review UI");
            "the journal could not be read or written; nothing was changed, try again shortly".to_string()
        }
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------

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
fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds();
    if s < 10 { "just now".to_string() } else { format!("{} ago", span_text(s)) }
}

/// "in 14m", or "expired".
fn until(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (t - now).num_seconds();
    if s <= 0 { "expired".to_string() } else { format!("in {}", span_text(s)) }
}

fn absolute(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A relative time with the exact one on hover.
fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) title=(absolute(t)) { (ago(t, now)) } }
}

/// A countdown to an expiry; the script keeps it running.
fn expiry(t: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! { span.expiry data-expires=(t.to_rfc3339()) title=(absolute(t)) { (until(t, now)) } }
}

fn risk_badge(risk: Risk) -> Markup {
    html! { span.badge.{ "risk-" (risk.as_str()) } title="risk" { (risk.as_str()) } }
}

fn status_badge(status: &str) -> Markup {
    html! { span.badge.{ "st-" (status) } { (status.replace('_', " ")) } }
}

/// "1 of 2 · sre, ops · MFA".
fn needs(approval: &Approval) -> String {
    let r = &approval.requirements;
    let mut parts = vec![format!("{} of {}", approval.approvals(), r.quorum)];
    if !r.groups.is_empty() {
        parts.push(r.groups.join(", "));
    }
    if r.mfa {
        parts.push("MFA".to_string());
    }
    parts.join(" · ")
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n).collect::<String>()) }
}

/// A line diff of two pretty-printed JSON documents with three lines of context around changes.
fn json_diff(old: &str, new: &str) -> Markup {
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
                            ChangeTag::Delete => span.del { "- " (line) },
                            ChangeTag::Insert => span.add { "+ " (line) },
                            ChangeTag::Equal => span { "  " (line) },
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Inbox,
    History,
    None,
}

fn shell(title: &str, viewer: Option<&Viewer>, nav: Nav, pending: usize, body: Markup) -> Markup {
    let current = |n: Nav| if n == nav { Some("page") } else { None };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) " · airlock" }
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

// ---------------------------------------------------------------------------------------------
// Sign-in
// ---------------------------------------------------------------------------------------------

async fn root(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    if ui.viewer(&headers).is_some() { see_other("/ui/inbox") } else { to_login() }
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

fn login_page(status: StatusCode, nonce: &str, error: Option<&str>, secure: bool) -> Response {
    let body = html! {
        div.login-box {
            div.panel {
                h1 { "Sign in" }
                p.sub { "Review and approve what agents want to do." }
                @if let Some(e) = error { div.flash.error role="alert" { (e) } }
                form.login method="post" action="/ui/login" {
                    input type="hidden" name="csrf" value=(nonce);
                    label for="token" { "Your airlock token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    p.hint { "The token your airlock operator gave you. Agents' tokens can't sign in here." }
                    div.buttons { button.primary type="submit" { "Sign in" } }
                }
            }
        }
    };
    let mut response = page(status, shell("Sign in", None, Nav::None, 0, body));
    if let Some(c) = set_cookie(LOGIN_COOKIE, nonce, 3600, secure) {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

fn unavailable() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        shell(
            "Unavailable",
            None,
            Nav::None,
            0,
            html! { div.flash.error { "airlock could not create a secure random token; try again" } },
        ),
    )
}

async fn login_form(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    if ui.viewer(&headers).is_some() {
        return see_other("/ui/inbox");
    }
    let Some(nonce) = cookie(&headers, LOGIN_COOKIE).filter(|n| n.len() == 64).or_else(random_hex) else {
        return unavailable();
    };
    login_page(StatusCode::OK, &nonce, None, is_https(&headers))
}

async fn login(State(ui): State<Ui>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let secure = is_https(&headers);
    let nonce = cookie(&headers, LOGIN_COOKIE);
    if !same_origin(&headers) || !nonce.as_deref().is_some_and(|n| same_secret(n, &form.csrf)) {
        let Some(fresh) = random_hex() else { return unavailable() };
        return login_page(
            StatusCode::FORBIDDEN,
            &fresh,
            Some("the sign-in form expired or came from another site; sign in again"),
            secure,
        );
    }
    let hash = hash_token(form.token.trim());
    let human = ui.engine().config().humans.iter().find(|h| h.token_hash == hash).map(|h| h.human.id.clone());
    let Some(human) = human else {
        tokio::time::sleep(SIGN_IN_FAILURE_DELAY).await;
        let nonce = nonce.unwrap_or_default();
        return login_page(
            StatusCode::UNAUTHORIZED,
            &nonce,
            Some("sign-in refused: that is not a human's airlock token"),
            secure,
        );
    };
    let Some(sid) = ui.sign_in(&human) else { return unavailable() };
    tracing::info!(human = %human, "signed in to the review UI");
    let mut response = see_other("/ui/inbox");
    let h = response.headers_mut();
    if let Some(c) = set_cookie(SESSION_COOKIE, &sid, SESSION_TTL.as_secs(), secure) {
        h.append(header::SET_COOKIE, c);
    }
    if let Some(c) = set_cookie(LOGIN_COOKIE, "", 0, secure) {
        h.append(header::SET_COOKIE, c);
    }
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

fn forbidden(viewer: Option<&Viewer>) -> Response {
    page(
        StatusCode::FORBIDDEN,
        shell(
            "Refused",
            viewer,
            Nav::None,
            0,
            html! {
                h1 { "Refused" }
                div.flash.error role="alert" {
                    "This form is out of date or was sent from another site, so nothing was changed. "
                    "Go back, reload the page and try again."
                }
            },
        ),
    )
}

/// The viewer, if the request carries their session and a valid CSRF token from our own pages;
/// otherwise the refusal page.
fn checked(ui: &Ui, headers: &HeaderMap, csrf: &str) -> Result<Viewer, Box<Response>> {
    match ui.viewer(headers) {
        Some(v) if same_origin(headers) && same_secret(&v.csrf, csrf) => Ok(v),
        other => Err(Box::new(forbidden(other.as_ref()))),
    }
}

async fn logout(State(ui): State<Ui>, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    if let Err(refused) = checked(&ui, &headers, &form.csrf) {
        return *refused;
    }
    ui.sign_out(&headers);
    let mut response = to_login();
    if let Some(c) = set_cookie(SESSION_COOKIE, "", 0, is_https(&headers)) {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Inbox and history
// ---------------------------------------------------------------------------------------------

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
                                a href={ "/ui/approvals/" (row.approval.id) } { (row.action.tool) }
                                @if !row.action.justification.is_empty() {
                                    div.small { (short(&row.action.justification, 90)) }
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

fn failure_page(viewer: Option<&Viewer>, e: &engine::Error) -> Response {
    let status = error_status(e);
    let title = if status == StatusCode::NOT_FOUND { "Not found" } else { "Something went wrong" };
    page(
        status,
        shell(title, viewer, Nav::None, 0, html! { h1 { (title) } div.flash.error role="alert" { (error_text(e)) } }),
    )
}

async fn inbox(State(ui): State<Ui>, headers: HeaderMap) -> Response {
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

async fn inbox_list(State(ui): State<Ui>, headers: HeaderMap) -> Response {
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
                @if !v.comment.is_empty() { ": " (short(&v.comment, 80)) }
            }
        }
    }
}

async fn history(State(ui): State<Ui>, headers: HeaderMap) -> Response {
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
                                    a href={ "/ui/approvals/" (row.approval.id) } { (row.action.tool) }
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

// ---------------------------------------------------------------------------------------------
// Detail and vote
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct DetailQuery {
    voted: Option<String>,
}

#[derive(Deserialize)]
struct VoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    verdict: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    totp: String,
}

/// What a detail page shows above the facts.
enum Flash {
    Ok(String),
    Error(String),
}

/// Why the viewer can't vote on a pending approval, when that is known before trying.
fn cannot_vote(viewer: &Viewer, approval: &Approval) -> Option<String> {
    let h = &viewer.human.human;
    if !h.has_role(Role::Approve) {
        return Some(format!(
            "You can read this approval but can't vote: `{}` does not have the `approve` role.",
            h.id
        ));
    }
    if let Some(v) = approval.votes.iter().find(|v| v.human == h.id) {
        let verdict = match v.verdict {
            Verdict::Approve => "approved",
            Verdict::Deny => "denied",
        };
        return Some(format!("You already {verdict} this; each approver votes once."));
    }
    let groups = &approval.requirements.groups;
    if !groups.is_empty() && !h.groups.iter().any(|g| groups.contains(g)) {
        return Some(format!(
            "This approval needs an approver from {}; you are in {}.",
            groups.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(" or "),
            if h.groups.is_empty() {
                "no group".to_string()
            } else {
                h.groups.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(", ")
            }
        ));
    }
    if approval.requirements.mfa && viewer.human.totp_secret.is_none() {
        return Some(format!("This approval needs a TOTP code and `{}` has no TOTP secret configured.", h.id));
    }
    None
}

struct Detail {
    approval: Approval,
    action: Action,
    owner: Option<String>,
    session: Option<airlock_core::Session>,
    previous: Option<Action>,
    events: Vec<StoredEvent>,
}

async fn load_detail(ui: &Ui, id: &str) -> Result<Detail, engine::Error> {
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
    Ok(Detail { approval, action, owner, session, previous, events })
}

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
                                a href={ "/ui/approvals/" (a) } { (summary) }
                            }
                            _ => { (summary) }
                        }
                    }
                }
            }
        }
    }
}

fn vote_form(viewer: &Viewer, d: &Detail, comment: &str) -> Markup {
    let mfa = d.approval.requirements.mfa;
    html! {
        form.vote method="post" action={ "/ui/approvals/" (d.approval.id) } {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label for="comment" { "Comment" }
            textarea #comment name="comment" required maxlength="4000"
                placeholder="What you checked, and why you decide this way" { (comment) }
            @if mfa {
                label for="totp" { "TOTP code" }
                input #totp .totp type="text" name="totp" inputmode="numeric" autocomplete="one-time-code"
                    pattern="[0-9]{6}" maxlength="6" required placeholder="123456";
                p.hint { "This approval needs step-up confirmation: the 6-digit code from your authenticator." }
            }
            div.buttons {
                button.approve type="submit" name="verdict" value="approve" { "Approve" }
                button.deny type="submit" name="verdict" value="deny" { "Deny" }
            }
        }
    }
}

fn detail_page(viewer: &Viewer, d: &Detail, pending: usize, flash: Option<Flash>, comment: &str) -> Markup {
    let now = Utc::now();
    let a = &d.approval;
    let act = &d.action;
    let decision = &act.decision;
    let args = pretty(&act.arguments);
    let body = html! {
        p.small { a href=(if a.status == ApprovalStatus::Pending { "/ui/inbox" } else { "/ui/history" }) { "← back" } }
        div.head-row {
            h1 { (act.tool) }
            div {
                span #status .badge.{ "st-" (a.status.as_str()) } { (a.status.as_str()) }
                " "
                (risk_badge(decision.risk))
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
        div.grid {
            div {
                section.panel aria-labelledby="h-why" {
                    h2 #h-why { "Justification" }
                    @if act.justification.is_empty() {
                        p.small { "The agent gave no justification." }
                    } @else {
                        p.justification { (act.justification) }
                    }
                }
                section.panel aria-labelledby="h-args" {
                    h2 #h-args { "Arguments" }
                    pre.json { (args) }
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
                        None => { p.small { "This is the first call of " code { (act.tool) } " in the session." } }
                    }
                }
                section.panel aria-labelledby="h-policy" {
                    h2 #h-policy { "Policy" }
                    dl.facts {
                        dt { "Decision" } dd { (decision.effect.as_str().replace('_', " ")) " by " (decision.decided_by) }
                        dt { "Revision" } dd.mono { (decision.policy_revision) }
                        @if let Some(cost) = decision.cost_usd { dt { "Cost" } dd { "$" (format!("{cost:.2}")) } }
                    }
                    h2.spaced { "Reasons" }
                    ul.reasons {
                        @for r in &decision.reasons { li { code { (r.rule) } " " (r.msg) } }
                        @if decision.reasons.is_empty() { li.small { "No reason was recorded." } }
                    }
                    @if !decision.warnings.is_empty() {
                        h2.spaced { "Warnings (not enforced)" }
                        ul.reasons { @for r in &decision.warnings { li { code { (r.rule) } " " (r.msg) } } }
                    }
                }
            }
            div {
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
                                    @if !v.comment.is_empty() { div { (v.comment) } }
                                }
                            }
                        }
                    }
                    @if a.status == ApprovalStatus::Pending {
                        @match cannot_vote(viewer, a) {
                            Some(why) => div.flash.note.spaced { (why) },
                            None => (vote_form(viewer, d, comment)),
                        }
                    }
                }
                section.panel aria-labelledby="h-facts" {
                    h2 #h-facts { "Action" }
                    dl.facts {
                        dt { "Action" } dd.mono { (act.id) " (#" (act.seq) ")" }
                        dt { "Status" } dd { (status_badge(act.status.as_str())) }
                        dt { "Approval" } dd.mono { (a.id) }
                        dt { "Session" } dd.mono { (a.session_id) }
                        @if let Some(s) = &d.session {
                            dt { "Task" } dd { (s.task) }
                            @if let Some(who) = &s.on_behalf_of { dt { "On behalf of" } dd { (who) } }
                        }
                        dt { "Digest" } dd.mono { (act.digest) }
                    }
                }
                section.panel aria-labelledby="h-timeline" {
                    h2 #h-timeline { "Session timeline" }
                    (timeline(d, now))
                }
            }
        }
    };
    shell(&act.tool, Some(viewer), Nav::None, pending, body)
}

async fn detail(
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

async fn vote(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<VoteForm>,
) -> Response {
    let viewer = match checked(&ui, &headers, &form.csrf) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let verdict = match form.verdict.as_str() {
        "approve" => Some(Verdict::Approve),
        "deny" => Some(Verdict::Deny),
        _ => None,
    };
    let result = match verdict {
        Some(verdict) => {
            let totp = Some(form.totp.trim().to_string()).filter(|t| !t.is_empty());
            let request = VoteRequest { verdict, comment: form.comment.clone(), totp };
            ui.engine().vote(&viewer.human, &id, request).await.map(|_| verdict)
        }
        None => Err(engine::Error::Invalid("choose Approve or Deny".to_string())),
    };
    match result {
        Ok(verdict) => {
            let v = match verdict {
                Verdict::Approve => "approve",
                Verdict::Deny => "deny",
            };
            tracing::info!(human = %viewer.human.human.id, approval = %id, verdict = v, "vote cast in the review UI");
            see_other(&format!("/ui/approvals/{id}?voted={v}"))
        }
        Err(e) => {
            let status = error_status(&e);
            let message = error_text(&e);
            match load_detail(&ui, &id).await {
                Ok(d) => {
                    let pending = ui.pending_count().await;
                    page(status, detail_page(&viewer, &d, pending, Some(Flash::Error(message)), &form.comment))
                }
                Err(e) => failure_page(Some(&viewer), &e),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Live updates, static files, fallbacks
// ---------------------------------------------------------------------------------------------

/// Where an event stream is in its short life.
enum Stream {
    Start(tokio::sync::watch::Receiver<u64>),
    Open(tokio::sync::watch::Receiver<u64>),
    Done,
}

/// Server-sent events: `approvals` each time an approval is requested or resolved. The stream
/// closes after [`STREAM_LIFETIME`] with a `bye` event, and the browser reconnects.
async fn events(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    if ui.viewer(&headers).is_none() {
        return page(StatusCode::UNAUTHORIZED, html! { "Signed out." });
    }
    let mut rx = ui.engine().approvals_changed();
    rx.borrow_and_update();
    let deadline = tokio::time::Instant::now() + STREAM_LIFETIME;
    let stream = futures::stream::unfold(Stream::Start(rx), move |state| async move {
        match state {
            Stream::Start(rx) => {
                let hello = Event::default().event("hello").data("0").retry(Duration::from_secs(2));
                Some((Ok::<Event, Infallible>(hello), Stream::Open(rx)))
            }
            Stream::Open(mut rx) => match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {
                    let n = *rx.borrow_and_update();
                    Some((Ok(Event::default().event("approvals").data(n.to_string())), Stream::Open(rx)))
                }
                _ => Some((Ok(Event::default().event("bye").data("reconnect")), Stream::Done)),
            },
            Stream::Done => None,
        }
    });
    let mut response = Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

async fn not_found(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    let viewer = ui.viewer(&headers);
    let body = html! {
        h1 { "Not found" }
        p { "There is no such page. " a href="/ui/inbox" { "Go to the inbox" } "." }
    };
    page(StatusCode::NOT_FOUND, shell("Not found", viewer.as_ref(), Nav::None, 0, body))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::body::Body;
    use axum::http::Request;
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;
    use crate::engine::{ActionRequest, Engine};

    const POLICY: &str = r#"package airlock
import rego.v1
require_approval contains {"rule": "SC1", "msg": "scaling needs an SRE", "groups": ["sre"]} if {
    input.action.tool == "nodepool.scale"
}
require_approval contains {"rule": "MFA1", "msg": "firewall changes need step-up", "mfa": true} if {
    input.action.tool == "firewall.open"
}
"#;
    const TOTP: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    struct Fixture {
        _dir: tempfile::TempDir,
        engine: Engine,
        app: Router,
    }

    fn hashed(token: &str) -> String {
        format!("sha256:{}", hex::encode(hash_token(token)))
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/main.rego"), POLICY).unwrap();
        let text = format!(
            "[server]\ndata_dir = \"data\"\n[policy]\ndir = \"policies\"\n\
             [[agents]]\nid = \"bot\"\ntoken = \"{}\"\nowner = \"platform\"\ntier = \"autonomous\"\n\
             [[humans]]\nid = \"alice\"\ntoken = \"{}\"\ngroups = [\"sre\"]\nroles = [\"approve\"]\n\
             [[humans]]\nid = \"carol\"\ntoken = \"{}\"\ngroups = [\"security\"]\nroles = [\"approve\"]\ntotp = \"env:CAROL_TOTP\"\n",
            hashed("bot-token"),
            hashed("alice-token"),
            hashed("carol-token"),
        );
        let env = BTreeMap::from([("CAROL_TOTP".to_string(), TOTP.to_string())]);
        let config = Config::parse(&text, &dir.path().join("airlock.toml"), &env).unwrap();
        let policy = crate::serve::load_policy(&config).unwrap();
        let store: Arc<dyn airlock_store::Store> = Arc::new(
            airlock_store::SqliteStore::open(&dir.path().join("data/journal.db"), Default::default()).unwrap(),
        );
        let engine = Engine::start(Arc::new(config), policy, store).await.unwrap();
        let app = router(AppState::new(engine.clone()));
        Fixture { _dir: dir, engine, app }
    }

    impl Fixture {
        /// The bot asks for `tool`; returns the approval id.
        async fn held(
            &self,
            session: Option<&str>,
            tool: &str,
            arguments: Value,
            justification: &str,
        ) -> (String, String) {
            let agent = self.engine.config().agents[0].clone();
            let session = match session {
                Some(s) => s.to_string(),
                None => self.engine.open_session(&agent, "test".into(), BTreeMap::new(), None).await.unwrap().id,
            };
            let request = ActionRequest {
                tool: tool.into(),
                arguments,
                justification: justification.into(),
                idempotency_key: None,
                reported_annotations: None,
                traceparent: None,
                mcp_session: None,
            };
            let view = self.engine.submit(&agent, &session, request).await.unwrap().view;
            (session, view.approval.unwrap().id)
        }

        async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
            let res = self.app.clone().oneshot(req).await.unwrap();
            let status = res.status();
            let headers = res.headers().clone();
            let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
            (status, headers, String::from_utf8_lossy(&body).into_owned())
        }

        async fn get(&self, path: &str, cookie: &str) -> (StatusCode, HeaderMap, String) {
            self.send(Request::get(path).header("cookie", cookie).body(Body::empty()).unwrap()).await
        }

        async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
            let body = form
                .iter()
                .map(|(k, v)| format!("{k}={}", v.replace('%', "%25").replace('&', "%26").replace(' ', "+")))
                .collect::<Vec<_>>()
                .join("&");
            let req = Request::post(path)
                .header("cookie", cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap();
            self.send(req).await
        }

        /// Signs in with `token`: returns the sign-in answer and the session cookie, if any.
        async fn sign_in(&self, token: &str) -> (StatusCode, String, String) {
            let (_, headers, html) = self.get("/ui/login", "").await;
            let login = set_cookies(&headers).into_iter().find(|c| c.starts_with(LOGIN_COOKIE)).unwrap();
            let (status, headers, body) =
                self.post("/ui/login", &login, &[("csrf", &csrf(&html)), ("token", token)]).await;
            let session = set_cookies(&headers)
                .into_iter()
                .find(|c| c.starts_with(&format!("{SESSION_COOKIE}=")))
                .unwrap_or_default();
            (status, session, body)
        }
    }

    fn set_cookies(headers: &HeaderMap) -> Vec<String> {
        headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .collect()
    }

    fn csrf(html: &str) -> String {
        let start = html.find(r#"name="csrf" value=""#).unwrap() + r#"name="csrf" value=""#.len();
        html[start..].split('"').next().unwrap().to_string()
    }

    #[tokio::test]
    async fn sign_in_refuses_unknown_tokens_and_agents() {
        let fx = fixture().await;
        let (status, headers, _) = fx.get("/ui/inbox", "").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/ui/login");
        for token in ["bot-token", "nobody", ""] {
            let (status, cookie, body) = fx.sign_in(token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{token}");
            assert!(cookie.is_empty(), "{token}");
            assert!(body.contains("not a human&#39;s airlock token") || body.contains("not a human's"), "{body}");
        }
        let (status, cookie, _) = fx.sign_in("alice-token").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (status, _, html) = fx.get("/ui/inbox", &cookie).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("Signed in as <strong>alice</strong>"), "{html}");
        // The session cookie is out of reach of scripts and of other sites.
        let (_, headers, html) = fx.get("/ui/login", "").await;
        let login = set_cookies(&headers).pop().unwrap();
        let req = Request::post("/ui/login")
            .header("cookie", &login)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf={}&token=alice-token", csrf(&html))))
            .unwrap();
        let (_, headers, _) = fx.send(req).await;
        let raw = headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
        let session = raw.iter().find(|c| c.starts_with("airlock_ui=")).unwrap();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
            assert!(session.contains(attr), "{session}");
        }
    }

    #[tokio::test]
    async fn sign_in_needs_the_form_nonce() {
        let fx = fixture().await;
        let req = Request::post("/ui/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from("csrf=x&token=alice-token"))
            .unwrap();
        let (status, headers, _) = fx.send(req).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(!set_cookies(&headers).iter().any(|c| c.starts_with("airlock_ui=")));
    }

    #[tokio::test]
    async fn forged_and_cross_site_posts_are_refused() {
        let fx = fixture().await;
        let (_, id) = fx.held(None, "nodepool.scale", json!({"count": 3}), "more capacity").await;
        let (_, cookie, _) = fx.sign_in("alice-token").await;
        let (_, _, html) = fx.get(&format!("/ui/approvals/{id}"), &cookie).await;
        let token = csrf(&html);
        let path = format!("/ui/approvals/{id}");
        let (status, _, _) = fx.post(&path, &cookie, &[("verdict", "approve"), ("comment", "ok")]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, _) = fx
            .post(&path, &cookie, &[("csrf", "0".repeat(64).as_str()), ("verdict", "approve"), ("comment", "ok")])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // The right token from another site.
        let req = Request::post(&path)
            .header("cookie", &cookie)
            .header("host", "airlock.example")
            .header("origin", "https://evil.example")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf={token}&verdict=approve&comment=ok")))
            .unwrap();
        assert_eq!(fx.send(req).await.0, StatusCode::FORBIDDEN);
        // Without a session, even with a token.
        let (status, _, _) = fx.post(&path, "", &[("csrf", &token), ("verdict", "approve"), ("comment", "ok")]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(fx.engine.approval(&id).await.unwrap().0.status, ApprovalStatus::Pending);

        // The same form, sent properly from our own origin, counts.
        let req = Request::post(&path)
            .header("cookie", &cookie)
            .header("host", "airlock.example")
            .header("origin", "http://airlock.example")
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf={token}&verdict=approve&comment=looks+fine")))
            .unwrap();
        let (status, headers, _) = fx.send(req).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], format!("/ui/approvals/{id}?voted=approve").as_str());
        let (approval, _) = fx.engine.approval(&id).await.unwrap();
        assert_eq!(approval.status, ApprovalStatus::Approved);
        assert_eq!(approval.votes[0].comment, "looks fine");
        let (_, _, html) = fx.get(&format!("/ui/approvals/{id}?voted=approve"), &cookie).await;
        assert!(html.contains("You approved this action. The approval is now approved."), "{html}");
    }

    #[tokio::test]
    async fn agent_text_is_escaped() {
        let fx = fixture().await;
        let evil = "<script>alert(1)</script>";
        let (_, id) =
            fx.held(None, "nodepool.scale", json!({"note": "</pre><img src=x onerror=alert(2)>"}), evil).await;
        let (_, cookie, _) = fx.sign_in("alice-token").await;
        for path in [format!("/ui/approvals/{id}"), "/ui/inbox".to_string(), "/ui/inbox/list".to_string()] {
            let (status, headers, html) = fx.get(&path, &cookie).await;
            assert_eq!(status, StatusCode::OK);
            assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{path}: {html}");
            assert!(!html.contains("<script>alert") && !html.contains("<img src=x"), "{path}: {html}");
            assert!(headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
        }
    }

    #[tokio::test]
    async fn detail_shows_policy_and_a_diff_against_the_previous_call() {
        let fx = fixture().await;
        let (session, first) = fx.held(None, "nodepool.scale", json!({"pool": "gpu", "count": 3}), "first").await;
        let (_, second) = fx.held(Some(&session), "nodepool.scale", json!({"pool": "gpu", "count": 8}), "second").await;
        let (_, cookie, _) = fx.sign_in("alice-token").await;
        let (_, _, html) = fx.get(&format!("/ui/approvals/{first}"), &cookie).await;
        assert!(html.contains("This is the first call of"), "{html}");
        let (_, _, html) = fx.get(&format!("/ui/approvals/{second}"), &cookie).await;
        assert!(html.contains(r#"<span class="del">-   &quot;count&quot;: 3,</span>"#), "{html}");
        assert!(html.contains(r#"<span class="add">+   &quot;count&quot;: 8,</span>"#), "{html}");
        assert!(html.contains("SC1") && html.contains("scaling needs an SRE"), "{html}");
        assert!(html.contains(&fx.engine.policy().revision().to_string()), "the policy revision is shown");
        assert!(html.contains("action.requested"), "the timeline is shown");
        // alice is an SRE: she gets the form, without a TOTP field.
        assert!(html.contains(r#"name="comment""#) && !html.contains(r#"name="totp""#), "{html}");
    }

    #[tokio::test]
    async fn refusals_are_shown_on_the_page() {
        let fx = fixture().await;
        let (_, id) = fx.held(None, "firewall.open", json!({"port": 22}), "ssh for debugging").await;
        let (_, cookie, _) = fx.sign_in("carol-token").await;
        let path = format!("/ui/approvals/{id}");
        let (_, _, html) = fx.get(&path, &cookie).await;
        assert!(html.contains(r#"name="totp""#), "{html}");
        let token = csrf(&html);
        let (status, _, html) = fx
            .post(&path, &cookie, &[("csrf", &token), ("verdict", "approve"), ("comment", "ok"), ("totp", "000000")])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(html.contains("TOTP code refused"), "{html}");
        assert!(html.contains(">ok</textarea>"), "the comment is kept: {html}");
        let code = crate::mfa::code_at(TOTP, Utc::now()).unwrap();
        let (status, _, _) = fx
            .post(&path, &cookie, &[("csrf", &token), ("verdict", "deny"), ("comment", "not now"), ("totp", &code)])
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, _, html) = fx.get("/ui/history", &cookie).await;
        assert!(html.contains("firewall.open") && html.contains("not now"), "{html}");
    }

    #[tokio::test]
    async fn events_need_a_session_and_announce_new_approvals() {
        let fx = fixture().await;
        assert_eq!(fx.get("/ui/events", "").await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(fx.get("/ui/inbox/list", "").await.0, StatusCode::UNAUTHORIZED);
        let (_, cookie, _) = fx.sign_in("alice-token").await;
        let res = fx
            .app
            .clone()
            .oneshot(Request::get("/ui/events").header("cookie", &cookie).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
        let mut body = res.into_body().into_data_stream();
        use futures::StreamExt;
        let hello = body.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&hello).contains("event: hello"));
        fx.held(None, "nodepool.scale", json!({"count": 1}), "x").await;
        let next = tokio::time::timeout(Duration::from_secs(5), body.next()).await.unwrap().unwrap().unwrap();
        assert!(String::from_utf8_lossy(&next).contains("event: approvals"), "{next:?}");
    }

    #[test]
    fn relative_times() {
        let now = Utc::now();
        assert_eq!(ago(now - chrono::Duration::seconds(3), now), "just now");
        assert_eq!(ago(now - chrono::Duration::seconds(200), now), "3m ago");
        assert_eq!(ago(now - chrono::Duration::hours(5), now), "5h ago");
        assert_eq!(until(now + chrono::Duration::seconds(900), now), "in 15m");
        assert_eq!(until(now - chrono::Duration::seconds(1), now), "expired");
    }

    #[test]
    fn origin_checks() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7878"));
        assert!(same_origin(&h), "no Origin: the CSRF token decides");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:7878"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:9999"));
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("", ""));
    }
}

//! The review UI at `/ui`: server-rendered HTML, served by the binary, no external assets.
//!
//! Humans sign in with their token (kept only as a cookie session id in memory; the cookie is
//! `HttpOnly`, `SameSite=Strict`), see the inbox of pending approvals (live: the page listens to
//! server-sent events and refreshes when approvals change), open one to see the session's
//! timeline, the justification, the arguments with a diff against the previous call of the same
//! tool, the policy reasons and revision, and approve or deny with a comment and a TOTP code.
//! Every form carries a per-session CSRF token.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_core::{Action, Approval, ApprovalStatus, Verdict};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;

use crate::api::AppState;
use crate::config::{HumanConfig, hash_token};
use crate::engine::VoteRequest;

const COOKIE: &str = "airlock_ui";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

struct UiSession {
    human: String,
    csrf: String,
    since: Instant,
}

/// State of the UI: signed-in browser sessions.
#[derive(Clone, Default)]
pub struct Ui {
    sessions: Arc<Mutex<HashMap<String, UiSession>>>,
}

#[derive(Clone)]
struct WebState {
    app: AppState,
    ui: Ui,
}

fn random_hex() -> String {
    let mut b = [0u8; 24];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The UI router, mounted by `serve`.
pub fn router(app: AppState) -> Router {
    let state = WebState { app, ui: Ui::default() };
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/inbox") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/inbox") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/inbox", get(inbox))
        .route("/ui/history", get(history))
        .route("/ui/events", get(events))
        .route("/ui/approvals/{id}", get(detail).post(vote))
        .with_state(state)
}

const CSS: &str = r#"
:root{--bg:#f6f7f9;--fg:#16181d;--muted:#5f6673;--card:#fff;--line:#dfe3ea;--accent:#1f5fd6;--ok:#1d7a46;--bad:#b42318}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;flex-wrap:wrap;gap:.75rem;align-items:center;padding:.75rem 1rem;background:#11151c;color:#fff}
header a{color:#cfd8e6;text-decoration:none}header a.here{color:#fff;font-weight:600}header .who{margin-left:auto;color:#9aa6b8}
header form{display:inline}header button{background:none;border:1px solid #3a4556;color:#cfd8e6;border-radius:6px;padding:.2rem .6rem;cursor:pointer}
main{max-width:1100px;margin:0 auto;padding:1rem}h1{font-size:1.3rem;margin:.5rem 0 1rem}h2{font-size:1.05rem;margin:1.2rem 0 .5rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:1rem;margin-bottom:1rem}
table{width:100%;border-collapse:collapse}th,td{text-align:left;padding:.55rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.8rem;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.03em}
tr.row:hover{background:#f0f4fb}a{color:var(--accent)}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;font-size:.78rem;font-weight:600;border:1px solid transparent}
.risk-low{background:#e7f6ec;color:#1d7a46}.risk-medium{background:#fff4d6;color:#8a5a00}.risk-high{background:#ffe4d6;color:#a33a00}.risk-critical{background:#ffe0e0;color:#b42318}
.st-pending{background:#e8efff;color:#1f5fd6}.st-approved{background:#e7f6ec;color:#1d7a46}.st-denied,.st-expired,.st-cancelled{background:#f1f1f1;color:#5f6673}
pre{background:#0f1420;color:#e6edf7;padding:.75rem;border-radius:8px;overflow:auto;font-size:.85rem;margin:0}
.diff .add{color:#7ee2a8}.diff .del{color:#ff9a9a}.muted{color:var(--muted)}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:.5rem 1rem}
.kv dt{font-size:.78rem;color:var(--muted);text-transform:uppercase}.kv dd{margin:0 0 .5rem;overflow-wrap:anywhere}
label{display:block;font-size:.85rem;color:var(--muted);margin:.5rem 0 .2rem}input,textarea{width:100%;padding:.55rem;border:1px solid var(--line);border-radius:8px;font:inherit}
textarea{min-height:4.5rem}.actions{display:flex;gap:.5rem;margin-top:.75rem;flex-wrap:wrap}
button.approve,button.deny,button.primary{border:0;border-radius:8px;padding:.6rem 1.1rem;font-weight:600;color:#fff;cursor:pointer}
button.approve{background:var(--ok)}button.deny{background:var(--bad)}button.primary{background:var(--accent)}
.flash{padding:.6rem .8rem;border-radius:8px;margin-bottom:1rem}.flash.ok{background:#e7f6ec;color:#1d7a46}.flash.err{background:#ffe0e0;color:#b42318}
ol.timeline{list-style:none;padding:0;margin:0}ol.timeline li{padding:.35rem 0;border-bottom:1px dashed var(--line);font-size:.9rem}
ol.timeline time{color:var(--muted);font-variant-numeric:tabular-nums;margin-right:.5rem}
@media (max-width:640px){th.opt,td.opt{display:none}main{padding:.6rem}header{padding:.6rem}}
"#;

fn page(title: &str, who: Option<(&str, &str)>, here: &str, body: &str) -> Html<String> {
    let nav = match who {
        Some((human, csrf)) => format!(
            "<a href=\"/ui/inbox\" class=\"{}\">Inbox</a><a href=\"/ui/history\" class=\"{}\">History</a>\
             <span class=\"who\">{}</span><form method=\"post\" action=\"/ui/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Sign out</button></form>",
            if here == "inbox" { "here" } else { "" },
            if here == "history" { "here" } else { "" },
            esc(human),
            esc(csrf)
        ),
        None => String::new(),
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · airlock</title><style>{CSS}</style></head><body><header><strong>airlock</strong>{nav}</header><main>{body}</main></body></html>",
        esc(title)
    ))
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == COOKIE).then(|| v.to_string())
    })
}

impl WebState {
    fn signed_in(&self, headers: &HeaderMap) -> Option<(HumanConfig, String)> {
        let id = cookie_of(headers)?;
        let mut sessions = self.ui.sessions.lock().ok()?;
        sessions.retain(|_, s| s.since.elapsed() < SESSION_TTL);
        let s = sessions.get(&id)?;
        let human = self.app.engine.config().humans.iter().find(|h| h.human.id == s.human)?.clone();
        Some((human, s.csrf.clone()))
    }
}

fn to_login() -> Response {
    Redirect::to("/ui/login").into_response()
}

#[derive(Deserialize)]
struct Msg {
    msg: Option<String>,
    err: Option<String>,
}

fn flash(q: &Msg) -> String {
    let mut out = String::new();
    if let Some(m) = &q.msg {
        out.push_str(&format!("<div class=\"flash ok\" role=\"status\">{}</div>", esc(m)));
    }
    if let Some(e) = &q.err {
        out.push_str(&format!("<div class=\"flash err\" role=\"alert\">{}</div>", esc(e)));
    }
    out
}

async fn login_page(Query(q): Query<Msg>) -> Html<String> {
    page(
        "Sign in",
        None,
        "",
        &format!(
            "<div class=\"card\" style=\"max-width:420px;margin:3rem auto\"><h1>Sign in</h1>{}\
             <form method=\"post\" action=\"/ui/login\"><label for=\"token\">Your airlock token</label>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required>\
             <div class=\"actions\"><button class=\"primary\" type=\"submit\">Sign in</button></div></form></div>",
            flash(&q)
        ),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(st): State<WebState>, Form(f): Form<LoginForm>) -> Response {
    let hash = hash_token(f.token.trim());
    let Some(human) = st.app.engine.config().humans.iter().find(|h| h.token_hash == hash) else {
        return Redirect::to("/ui/login?err=That+token+is+not+a+human%27s+token.").into_response();
    };
    let id = random_hex();
    if let Ok(mut s) = st.ui.sessions.lock() {
        s.insert(id.clone(), UiSession { human: human.human.id.clone(), csrf: random_hex(), since: Instant::now() });
    }
    (
        [(header::SET_COOKIE, format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=43200"))],
        Redirect::to("/ui/inbox"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(State(st): State<WebState>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    if let Some(id) = cookie_of(&headers)
        && let Ok(mut s) = st.ui.sessions.lock()
        && s.get(&id).is_some_and(|x| x.csrf == f.csrf)
    {
        s.remove(&id);
    }
    (
        [(header::SET_COOKIE, format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"))],
        Redirect::to("/ui/login"),
    )
        .into_response()
}

fn age(t: chrono::DateTime<Utc>) -> String {
    let s = (Utc::now() - t).num_seconds().max(0);
    match s {
        0..=4 => "just now".into(),
        5..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn until(t: chrono::DateTime<Utc>) -> String {
    let s = (t - Utc::now()).num_seconds();
    if s <= 0 {
        return "expired".into();
    }
    match s {
        0..=59 => format!("in {s}s"),
        60..=3599 => format!("in {}m", s / 60),
        _ => format!("in {}h {}m", s / 3600, (s % 3600) / 60),
    }
}

async fn rows(st: &WebState, status: Option<ApprovalStatus>) -> Vec<(Approval, Option<Action>)> {
    let mut out = Vec::new();
    for a in st.app.engine.approvals(status, 200).await.unwrap_or_default() {
        if status.is_none() && a.status == ApprovalStatus::Pending {
            continue;
        }
        let action = st.app.engine.store().action(&a.action_id).await.ok().flatten();
        out.push((a, action));
    }
    out
}

fn owner_of(st: &WebState, agent: &str) -> String {
    st.app
        .engine
        .config()
        .agents
        .iter()
        .find(|a| a.agent.id == agent)
        .map(|a| a.agent.owner.clone())
        .unwrap_or_default()
}

async fn inbox(State(st): State<WebState>, headers: HeaderMap, Query(q): Query<Msg>) -> Response {
    let Some((human, csrf)) = st.signed_in(&headers) else { return to_login() };
    let list = rows(&st, Some(ApprovalStatus::Pending)).await;
    let mut body = format!("<h1>Pending approvals <span class=\"muted\">({})</span></h1>{}", list.len(), flash(&q));
    if list.is_empty() {
        body.push_str(
            "<div class=\"card muted\" id=\"empty\">Nothing waits for a human. This page updates by itself.</div>",
        );
    } else {
        body.push_str("<div class=\"card\"><table id=\"inbox\"><thead><tr><th>Tool</th><th>Agent</th><th class=\"opt\">Owner</th><th>Risk</th><th class=\"opt\">Votes</th><th class=\"opt\">Age</th><th>Expires</th></tr></thead><tbody>");
        for (a, action) in &list {
            let (tool, risk) =
                action.as_ref().map(|x| (x.tool.clone(), x.decision.risk.as_str().to_string())).unwrap_or_default();
            body.push_str(&format!(
                "<tr class=\"row\" data-approval=\"{id}\"><td><a href=\"/ui/approvals/{id}\">{tool}</a></td><td>{agent}</td><td class=\"opt\">{owner}</td>\
                 <td><span class=\"badge risk-{risk}\">{risk}</span></td><td class=\"opt\">{votes}/{quorum}</td><td class=\"opt\">{age}</td><td>{exp}</td></tr>",
                id = esc(&a.id),
                tool = esc(&tool),
                agent = esc(&a.agent_id),
                owner = esc(&owner_of(&st, &a.agent_id)),
                risk = esc(&risk),
                votes = a.approvals(),
                quorum = a.requirements.quorum,
                age = age(a.created_at),
                exp = until(a.expires_at),
            ));
        }
        body.push_str("</tbody></table></div>");
    }
    // Live update: reload when approvals change; poll as a fallback.
    body.push_str(
        "<script>(function(){var r=function(){location.reload()};try{var es=new EventSource('/ui/events');es.onmessage=r;es.onerror=function(){es.close();setTimeout(r,5000)}}catch(e){setTimeout(r,5000)}})();</script>",
    );
    page("Inbox", Some((&human.human.id, &csrf)), "inbox", &body).into_response()
}

async fn history(State(st): State<WebState>, headers: HeaderMap) -> Response {
    let Some((human, csrf)) = st.signed_in(&headers) else { return to_login() };
    let list = rows(&st, None).await;
    let mut body = String::from(
        "<h1>Resolved approvals</h1><div class=\"card\"><table><thead><tr><th>Tool</th><th>Agent</th><th>Status</th><th class=\"opt\">Votes</th><th class=\"opt\">Resolved</th></tr></thead><tbody>",
    );
    for (a, action) in &list {
        let votes: Vec<String> = a
            .votes
            .iter()
            .map(|v| format!("{} ({})", v.human, if v.verdict == Verdict::Approve { "approve" } else { "deny" }))
            .collect();
        body.push_str(&format!(
            "<tr class=\"row\"><td><a href=\"/ui/approvals/{id}\">{tool}</a></td><td>{agent}</td><td><span class=\"badge st-{st}\">{st}</span></td><td class=\"opt\">{votes}</td><td class=\"opt\">{when}</td></tr>",
            id = esc(&a.id),
            tool = esc(&action.as_ref().map(|x| x.tool.clone()).unwrap_or_default()),
            agent = esc(&a.agent_id),
            st = a.status.as_str(),
            votes = esc(&votes.join(", ")),
            when = a.resolved_at.map(age).unwrap_or_default(),
        ));
    }
    body.push_str("</tbody></table></div>");
    page("History", Some((&human.human.id, &csrf)), "history", &body).into_response()
}

async fn events(State(st): State<WebState>, headers: HeaderMap) -> Response {
    if st.signed_in(&headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut rx = st.app.engine.approvals_changed();
    let stream = async_stream(move |tx| async move {
        while rx.changed().await.is_ok() {
            if tx.send(Ok::<_, Infallible>(Event::default().data("changed"))).await.is_err() {
                break;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// A stream fed by a task (keeps the dependency list short: tokio's channel plus futures).
fn async_stream<F, Fut>(f: F) -> impl futures::Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(f(tx));
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn diff_html(old: &str, new: &str) -> String {
    let diff = similar::TextDiff::from_lines(old, new);
    let mut out = String::new();
    for change in diff.iter_all_changes() {
        let (class, sign) = match change.tag() {
            similar::ChangeTag::Delete => ("del", "-"),
            similar::ChangeTag::Insert => ("add", "+"),
            similar::ChangeTag::Equal => ("", " "),
        };
        out.push_str(&format!("<span class=\"{class}\">{sign} {}</span>", esc(&change.to_string())));
    }
    out
}

async fn detail(
    State(st): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Msg>,
) -> Response {
    let Some((human, csrf)) = st.signed_in(&headers) else { return to_login() };
    let Ok((approval, action)) = st.app.engine.approval(&id).await else {
        return (
            StatusCode::NOT_FOUND,
            page("Not found", Some((&human.human.id, &csrf)), "", "<h1>No such approval</h1>"),
        )
            .into_response();
    };
    let session = st.app.engine.store().session(&action.session_id).await.ok().flatten();
    let actions = st.app.engine.store().session_actions(&action.session_id).await.unwrap_or_default();
    let previous = actions.iter().filter(|a| a.tool == action.tool && a.seq < action.seq).max_by_key(|a| a.seq);
    let events = st.app.engine.store().events(&action.session_id).await.unwrap_or_default();
    let req = &approval.requirements;
    let reasons: String = action
        .decision
        .reasons
        .iter()
        .map(|r| format!("<li><code>{}</code> {}</li>", esc(&r.rule), esc(&r.msg)))
        .collect();
    let votes: String = approval
        .votes
        .iter()
        .map(|v| {
            format!(
                "<li><strong>{}</strong> {} — {} <span class=\"muted\">{}</span></li>",
                esc(&v.human),
                if v.verdict == Verdict::Approve { "approved" } else { "denied" },
                esc(&v.comment),
                age(v.at)
            )
        })
        .collect();
    let timeline: String = events
        .iter()
        .map(crate::timeline::entry)
        .map(|e| {
            format!(
                "<li><time>{}</time>{}</li>",
                esc(e["at"].as_str().and_then(|t| t.get(11..19)).unwrap_or("")),
                esc(e["summary"].as_str().unwrap_or(""))
            )
        })
        .collect();
    let diff = match previous {
        Some(p) => format!(
            "<h2>Change since the previous <code>{}</code> call (#{})</h2><pre class=\"diff\">{}</pre>",
            esc(&p.tool),
            p.seq,
            diff_html(&pretty(&p.arguments), &pretty(&action.arguments))
        ),
        None => String::new(),
    };
    let form = if approval.status == ApprovalStatus::Pending {
        format!(
            "<div class=\"card\"><h2>Your decision</h2><form method=\"post\" action=\"/ui/approvals/{id}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label for=\"comment\">Comment (required)</label><textarea id=\"comment\" name=\"comment\" required></textarea>\
             {totp}<div class=\"actions\"><button class=\"approve\" name=\"verdict\" value=\"approve\">Approve</button>\
             <button class=\"deny\" name=\"verdict\" value=\"deny\">Deny</button></div></form></div>",
            id = esc(&approval.id),
            csrf = esc(&csrf),
            totp = if req.mfa {
                "<label for=\"totp\">Authenticator code (MFA required)</label><input id=\"totp\" name=\"totp\" inputmode=\"numeric\" autocomplete=\"one-time-code\" pattern=\"[0-9]{6}\" required>"
            } else {
                "<label for=\"totp\">Authenticator code (optional)</label><input id=\"totp\" name=\"totp\" inputmode=\"numeric\" autocomplete=\"one-time-code\">"
            }
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1><code>{tool}</code> <span class=\"badge risk-{risk}\">{risk}</span> <span class=\"badge st-{status}\" id=\"status\">{status}</span></h1>{flash}\
         <div class=\"card\"><dl class=\"grid kv\"><div><dt>Agent</dt><dd>{agent}</dd></div><div><dt>Owner</dt><dd>{owner}</dd></div>\
         <div><dt>Session</dt><dd>{task}</dd></div><div><dt>Needs</dt><dd>{quorum} approval(s){groups}{mfa}</dd></div>\
         <div><dt>Votes</dt><dd>{count}/{quorum}</dd></div><div><dt>Expires</dt><dd>{expires}</dd></div>\
         <div><dt>Policy revision</dt><dd><code>{rev}</code></dd></div><div><dt>Approval</dt><dd><code>{id}</code></dd></div></dl></div>\
         <div class=\"card\"><h2>Why the agent wants this</h2><p>{just}</p><h2>Why a human must decide</h2><ul>{reasons}</ul></div>\
         <div class=\"card\"><h2>Arguments</h2><pre>{args}</pre>{diff}</div>{form}\
         {votes_block}<div class=\"card\"><h2>Session timeline</h2><ol class=\"timeline\">{timeline}</ol></div>",
        tool = esc(&action.tool),
        risk = action.decision.risk.as_str(),
        status = approval.status.as_str(),
        flash = flash(&q),
        agent = esc(&action.agent_id),
        owner = esc(&owner_of(&st, &action.agent_id)),
        task = esc(&session.map(|s| s.task).unwrap_or_default()),
        quorum = req.quorum,
        groups = if req.groups.is_empty() { String::new() } else { format!(" from {}", esc(&req.groups.join("/"))) },
        mfa = if req.mfa { " with MFA" } else { "" },
        count = approval.approvals(),
        expires = until(approval.expires_at),
        rev = esc(action.decision.policy_revision.get(..19).unwrap_or("")),
        id = esc(&approval.id),
        just = if action.justification.is_empty() {
            "<span class=\"muted\">none given</span>".into()
        } else {
            esc(&action.justification)
        },
        args = esc(&pretty(&action.arguments)),
        votes_block = if votes.is_empty() {
            String::new()
        } else {
            format!("<div class=\"card\"><h2>Votes</h2><ul>{votes}</ul></div>")
        },
    );
    page(&action.tool, Some((&human.human.id, &csrf)), "", &body).into_response()
}

#[derive(Deserialize)]
struct VoteForm {
    csrf: String,
    verdict: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    totp: String,
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn vote(
    State(st): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<VoteForm>,
) -> Response {
    let Some((human, csrf)) = st.signed_in(&headers) else { return to_login() };
    // CSRF: the session's token must come back with the form, and a browser's Origin (when it
    // sends one) must be this server.
    let origin_ok = match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (Some(o), Some(h)) => {
            let o = o.to_str().unwrap_or_default();
            o.ends_with(&format!("//{}", h.to_str().unwrap_or_default()))
        }
        _ => true,
    };
    if f.csrf != csrf || !origin_ok {
        return (StatusCode::FORBIDDEN, "the form is stale or came from another site; reload the page").into_response();
    }
    let verdict = if f.verdict == "deny" { Verdict::Deny } else { Verdict::Approve };
    let totp = Some(f.totp.trim().to_string()).filter(|t| !t.is_empty());
    match st.app.engine.vote(&human, &id, VoteRequest { verdict, comment: f.comment, totp }).await {
        Ok(view) => {
            let status = view.approval.map(|a| a.status.as_str().to_string()).unwrap_or_default();
            Redirect::to(&format!(
                "/ui/approvals/{}?msg={}",
                enc(&id),
                enc(&format!("Vote recorded; the approval is {status}."))
            ))
            .into_response()
        }
        Err(e) => Redirect::to(&format!("/ui/approvals/{}?err={}", enc(&id), enc(&e.to_string()))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_neutralises_markup() {
        assert_eq!(esc("<script>alert('x')</script>&\""), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;");
    }

    #[test]
    fn diffs_mark_changed_lines() {
        let d = diff_html("{\n  \"count\": 3\n}", "{\n  \"count\": 12\n}");
        assert!(d.contains("class=\"del\">-   &quot;count&quot;: 3"), "{d}");
        assert!(d.contains("class=\"add\">+   &quot;count&quot;: 12"), "{d}");
    }
}

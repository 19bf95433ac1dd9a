//! The review UI end to end, through its router without sockets: signing in, CSRF and origin
//! checks, escaping, the detail page, votes and the event stream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::ApprovalStatus;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use chrono::Utc;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::router;
use super::session::{LOGIN_COOKIE, SESSION_COOKIE};
use crate::api::AppState;
use crate::config::{Config, hash_token};
use crate::engine::{ActionRequest, Engine, PlanProposal, PlanView};

const POLICY: &str = r#"package airlock
import rego.v1
require_approval contains {"rule": "SC1", "msg": "scaling needs an SRE", "groups": ["sre"]} if {
    input.action.tool == "nodepool.scale"
}
require_approval contains {"rule": "MFA1", "msg": "firewall changes need step-up", "mfa": true} if {
    input.action.tool == "firewall.open"
}
require_approval contains {"rule": "PLAN1", "msg": "plans need an SRE", "groups": ["sre"]} if {
    input.kind == "plan.propose"
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
    let store: Arc<dyn airlock_store::Store> =
        Arc::new(airlock_store::SqliteStore::open(&dir.path().join("data/journal.db"), Default::default()).unwrap());
    let engine = Engine::start(Arc::new(config), policy, store).await.unwrap();
    let app = router(AppState::new(engine.clone()));
    Fixture { _dir: dir, engine, app }
}

impl Fixture {
    /// The bot asks for `tool`; returns the approval id.
    async fn held(&self, session: Option<&str>, tool: &str, arguments: Value, justification: &str) -> (String, String) {
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
            server: None,
            plan_lease: None,
        };
        let view = self.engine.submit(&agent, &session, request).await.unwrap().view;
        (session, view.approval.unwrap().id)
    }

    /// The bot proposes `draft` in `session` (a new plan, or a version of `plan`).
    async fn propose(&self, session: &str, plan: Option<&str>, draft: Value) -> PlanView {
        let agent = self.engine.config().agents[0].clone();
        let proposal = PlanProposal { draft: serde_json::from_value(draft).unwrap() };
        self.engine.propose_plan(&agent, session, plan, proposal).await.unwrap()
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
        let (status, headers, body) = self.post("/ui/login", &login, &[("csrf", &csrf(&html)), ("token", token)]).await;
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
    let (status, _, _) =
        fx.post(&path, &cookie, &[("csrf", "0".repeat(64).as_str()), ("verdict", "approve"), ("comment", "ok")]).await;
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
    let (_, id) = fx.held(None, "nodepool.scale", json!({"note": "</pre><img src=x onerror=alert(2)>"}), evil).await;
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

/// Every character an agent could use to make its arguments read differently from what they are
/// (the listed ones and a few other `Cf`): none reaches the page as it is.
const HIDDEN: &[char] = &[
    '\u{200B}',
    '\u{200C}',
    '\u{200D}',
    '\u{200E}',
    '\u{200F}',
    '\u{202A}',
    '\u{202B}',
    '\u{202C}',
    '\u{202D}',
    '\u{202E}',
    '\u{2066}',
    '\u{2067}',
    '\u{2068}',
    '\u{2069}',
    '\u{FEFF}',
    '\u{00AD}',
    '\u{2060}',
    '\u{061C}',
    '\u{E0041}',
];

#[tokio::test]
async fn invisible_and_direction_changing_characters_are_shown_and_flagged() {
    let fx = fixture().await;
    // The classic: a right-to-left override makes `exe.txt` read `txt.exe`, in a key and a value.
    let args = json!({"file": "report\u{202E}txt.exe", "pat\u{200B}h": "/tmp"});
    let (session, first) = fx.held(None, "nodepool.scale", json!({"file": "report.txt"}), "plain").await;
    let (_, second) = fx.held(Some(&session), "nodepool.scale", args, "looks \u{2066}fine\u{2069}").await;
    let all: String = HIDDEN.iter().map(|c| format!("{c}x")).collect();
    let (_, third) = fx.held(None, "nodepool.scale", json!({"all": all}), "").await;
    let (_, cookie, _) = fx.sign_in("alice-token").await;

    let (_, _, html) = fx.get(&format!("/ui/approvals/{second}"), &cookie).await;
    for c in ['\u{202E}', '\u{200B}', '\u{2066}', '\u{2069}'] {
        assert!(!html.contains(c), "U+{:04X} reached the page as it is", u32::from(c));
    }
    let marker =
        r#"<mark class="hidden-char" title="right-to-left override: reverses the text after it">⟨U+202E⟩</mark>"#;
    assert!(html.contains(&format!("report{marker}txt.exe")), "the arguments show the marker: {html}");
    assert!(html.contains("pat<mark class=\"hidden-char\""), "keys too: {html}");
    // The diff against the earlier call shows them as well.
    assert!(html.contains(&format!(r#"<span class="add">+   &quot;file&quot;: &quot;report{marker}"#)), "{html}");
    assert!(html.contains("The arguments contain invisible or direction-changing characters."), "{html}");
    assert!(html.contains("The justification contains invisible or direction-changing characters."), "{html}");
    assert!(html.contains(r#"class="flash error hidden-chars" role="alert""#), "{html}");

    let (_, _, html) = fx.get(&format!("/ui/approvals/{third}"), &cookie).await;
    for c in HIDDEN {
        assert!(!html.contains(*c), "U+{:04X} reached the page as it is", u32::from(*c));
        assert!(html.contains(&format!("⟨U+{:04X}⟩", u32::from(*c))), "U+{:04X} has no marker", u32::from(*c));
    }

    // The inbox flags the rows; a plain action is not flagged.
    let (_, _, list) = fx.get("/ui/inbox/list", &cookie).await;
    let row = |id: &str| {
        let start = list.find(&format!(r#"data-approval="{id}""#)).unwrap();
        let end = list[start..].find("</tr>").unwrap();
        list[start..start + end].to_string()
    };
    assert!(row(&second).contains("hidden characters") && row(&second).contains("⟨U+2066⟩"), "{list}");
    assert!(!row(&first).contains("hidden characters"), "{list}");
    let (_, _, html) = fx.get(&format!("/ui/approvals/{first}"), &cookie).await;
    assert!(!html.contains("hidden-chars"), "{html}");
}

/// The approval id of the newest version of `plan`.
fn newest_approval(plan: &PlanView) -> String {
    plan.versions.last().unwrap().approval_id.clone().unwrap()
}

#[tokio::test]
async fn a_plan_proposal_shows_its_plan_and_an_amendment_what_it_changes() {
    let fx = fixture().await;
    let agent = fx.engine.config().agents[0].clone();
    let session = fx.engine.open_session(&agent, "migrate".into(), BTreeMap::new(), None).await.unwrap().id;
    let evil = "<script>alert(1)</script>";
    let plan = fx
        .propose(
            &session,
            None,
            json!({"goal": format!("migrate orders {evil}"), "budget_usd": 40, "stuck_after_seconds": 600, "steps": [
                {"id": "backup", "tool": "db.backup", "description": format!("back up {evil}"), "expected_cost_usd": 2.5,
                 "arguments": {"type": "object", "properties": {"db": {"const": "</pre><img src=x onerror=alert(2)>"}}}},
                {"id": "migrate", "tool": "db.<b>migrate</b>", "assignee": "bot"}
            ]}),
        )
        .await;
    let first = newest_approval(&plan);
    let (_, cookie, _) = fx.sign_in("alice-token").await;
    let path = format!("/ui/approvals/{first}");
    let (status, _, html) = fx.get(&path, &cookie).await;
    assert_eq!(status, StatusCode::OK);
    // The plan is shown for review, step by step, escaped.
    assert!(
        html.contains("Plan proposal") && html.contains(&format!("/ui/sessions/{session}/plans/{}", plan.id)),
        "{html}"
    );
    assert!(html.contains(r#"data-step="backup""#) && html.contains(r#"data-step="migrate""#), "{html}");
    assert!(html.contains("migrate orders &lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
    assert!(html.contains("back up &lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
    assert!(
        html.contains("db.&lt;b&gt;migrate&lt;/b&gt;") && html.contains("$2.50") && html.contains("$40.00"),
        "{html}"
    );
    assert!(html.contains("stuck after 10 min without progress"), "{html}");
    assert!(!html.contains("<script>alert") && !html.contains("<img src=x") && !html.contains("<b>migrate"), "{html}");
    assert!(!html.contains("h-plan-diff"), "a first version has nothing to compare with: {html}");
    // It is an ordinary approval: the form is there and works.
    let (status, _, _) =
        fx.post(&path, &cookie, &[("csrf", &csrf(&html)), ("verdict", "approve"), ("comment", "reads well")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let shown = fx.engine.plan(&session, &plan.id, None).await.unwrap();
    assert_eq!((shown.in_force, shown.status.as_str()), (Some(1), "approved"));

    // An amendment adds a step and changes the budget: the approval page says so, marked.
    let amended = fx
        .propose(
            &session,
            Some(&plan.id),
            json!({"goal": format!("migrate orders {evil}"), "budget_usd": 60, "stuck_after_seconds": 600, "steps": [
                {"id": "backup", "tool": "db.backup", "description": format!("back up {evil}"), "expected_cost_usd": 2.5,
                 "arguments": {"type": "object", "properties": {"db": {"const": "</pre><img src=x onerror=alert(2)>"}}}},
                {"id": "migrate", "tool": "db.migrate", "assignee": "bot"},
                {"id": "vacuum", "tool": "db.vacuum", "description": "reclaim space <i>now</i>"}
            ]}),
        )
        .await;
    let second = newest_approval(&amended);
    let (_, _, html) = fx.get(&format!("/ui/approvals/{second}"), &cookie).await;
    assert!(html.contains("Change from version 1 in force"), "{html}");
    assert!(html.contains(r#"<li class="add" data-step="vacuum">"#), "{html}");
    assert!(html.contains("reclaim space &lt;i&gt;now&lt;/i&gt;") && !html.contains("<i>now"), "{html}");
    assert!(html.contains(r#"<li class="chg" data-step="migrate">"#), "{html}");
    assert!(html.contains(r#"<li class="chg" data-field="budget">"#) && html.contains("<del>$40.00</del>"), "{html}");
    assert!(!html.contains(r#"data-field="goal""#), "the goal did not change: {html}");
    assert!(html.contains(r#"class="step step-added" data-step="vacuum""#), "{html}");

    // The plan's page: version 1 in force, version 2 waiting with its diff and a link to it.
    let (status, _, html) = fx.get(&format!("/ui/sessions/{session}/plans/{}", plan.id), &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"id="plan-status""#) && html.contains("approved by alice"), "{html}");
    assert!(html.contains(&format!(r#"<a id="pending-approval" href="/ui/approvals/{second}">"#)), "{html}");
    assert!(html.contains("Amendment waiting: version 2") && html.contains(r#"data-step="vacuum""#), "{html}");
    assert!(html.contains("back up &lt;script&gt;") && !html.contains("<script>alert") && !html.contains("<img src=x"));
    // Every approval page of the session links the plan.
    let (_, other) = fx.held(Some(&session), "nodepool.scale", json!({"count": 2}), "more").await;
    let (_, _, html) = fx.get(&format!("/ui/approvals/{other}"), &cookie).await;
    assert!(html.contains(&format!(r#"href="/ui/sessions/{session}/plans/{}""#, plan.id)), "{html}");
    assert!(!html.contains("Plan proposal"), "{html}");
}

#[tokio::test]
async fn only_an_action_the_journal_knows_as_a_proposal_is_shown_as_a_plan() {
    let fx = fixture().await;
    let agent = fx.engine.config().agents[0].clone();
    let session = fx.engine.open_session(&agent, "plan".into(), BTreeMap::new(), None).await.unwrap().id;
    let plan = fx.propose(&session, None, json!({"goal": "back up", "steps": [{"tool": "db.backup"}]})).await;
    let plans = fx.engine.plans(&session, None).await.unwrap();
    let action = fx.engine.store().action(&plan.versions[0].action_id).await.unwrap().unwrap();
    assert!(super::plans::proposal_of(&action, &plans).is_some());
    // The same tool name and arguments under another action id, or from an upstream, are not it.
    let mut other = action.clone();
    other.id = "act_forged".into();
    assert!(super::plans::proposal_of(&other, &plans).is_none());
    let mut upstream = action.clone();
    upstream.upstream = Some("airlock".into());
    assert!(super::plans::proposal_of(&upstream, &plans).is_none());

    // The plan page needs a signed-in human, and an unknown plan is not found.
    let path = format!("/ui/sessions/{session}/plans/{}", plan.id);
    let (status, headers, _) = fx.get(&path, "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/ui/login");
    let (_, cookie, _) = fx.sign_in("alice-token").await;
    let (status, _, html) = fx.get(&path, &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("no version yet") && html.contains(r#"id="pending-approval""#), "{html}");
    let (status, _, _) = fx.get(&format!("/ui/sessions/{session}/plans/pln_nope"), &cookie).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = fx.get(&format!("/ui/sessions/ses_nope/plans/{}", plan.id), &cookie).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_stuck_plan_says_so_on_its_page() {
    let fx = fixture().await;
    let agent = fx.engine.config().agents[0].clone();
    let session = fx.engine.open_session(&agent, "plan".into(), BTreeMap::new(), None).await.unwrap().id;
    let plan = fx
        .propose(&session, None, json!({"goal": "back up", "stuck_after_seconds": 1, "steps": [{"tool": "db.backup"}]}))
        .await;
    let (_, cookie, _) = fx.sign_in("alice-token").await;
    let path = format!("/ui/approvals/{}", newest_approval(&plan));
    let (_, _, html) = fx.get(&path, &cookie).await;
    let (status, _, _) =
        fx.post(&path, &cookie, &[("csrf", &csrf(&html)), ("verdict", "approve"), ("comment", "ok")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, _, html) = fx.get(&format!("/ui/sessions/{session}/plans/{}", plan.id), &cookie).await;
    assert!(html.contains("Stuck: no step has made progress since"), "{html}");
    assert!(html.contains("will report it on its next check") || html.contains("journaled it"), "{html}");
}

#[tokio::test]
async fn a_plan_proposal_shows_who_runs_each_step_and_under_what_lease() {
    let fx = fixture().await;
    let agent = fx.engine.config().agents[0].clone();
    let session = fx.engine.open_session(&agent, "deploy".into(), BTreeMap::new(), None).await.unwrap().id;
    let plan = fx
        .propose(
            &session,
            None,
            json!({"goal": "issue and deploy certificates", "steps": [
                {"id": "issue", "tool": "pki.issue", "assignee": "bot"},
                {"id": "deploy", "tool": "pki.deploy", "assignee": "exec-*", "lease_seconds": 90, "max_attempts": 2},
                {"id": "verify", "tool": "pki.verify", "assignee": "exec-<i>x</i>", "max_attempts": 1},
                {"id": "notify", "tool": "chat.post"}
            ]}),
        )
        .await;
    let (_, cookie, _) = fx.sign_in("alice-token").await;
    let (status, _, html) = fx.get(&format!("/ui/approvals/{}", newest_approval(&plan)), &cookie).await;
    assert_eq!(status, StatusCode::OK);
    // The step's head, by step: assignee, then its lease and attempts when the step sets them.
    let head = |id: &str| {
        let at = html.find(&format!(r#"data-step="{id}""#)).unwrap_or_else(|| panic!("no step {id} in {html}"));
        let rest = &html[at..];
        rest[..rest.find("</div>").unwrap()].to_string()
    };
    let deploy = head("deploy");
    assert!(deploy.contains("assignee <strong>exec-*</strong> · lease 90 s · 2 attempts"), "{deploy}");
    let issue = head("issue");
    assert!(issue.contains("assignee <strong>bot</strong>") && !issue.contains("· lease"), "{issue}");
    assert!(!issue.contains("attempt"), "{issue}");
    let verify = head("verify");
    assert!(verify.contains("assignee <strong>exec-&lt;i&gt;x&lt;/i&gt;</strong> · 1 attempt<"), "{verify}");
    assert!(!verify.contains("· lease") && !html.contains("<i>x"), "{verify}");
    let notify = head("notify");
    assert!(!notify.contains("assignee"), "the plan's own session runs it: {notify}");
}

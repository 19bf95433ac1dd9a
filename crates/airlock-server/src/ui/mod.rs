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
//!
//! Before anyone tries, the detail page decides whether to show the vote form with the same rule
//! (`airlock_core::vote::eligibility`, through `vote::vote_eligibility`, which only words its
//! refusals for the page); casting the vote always goes through the engine.
//!
//! The parts: `session` (sign-in, the session cookie, CSRF and origin checks), `inbox` (pending
//! and resolved approvals), `approvals` (one approval's detail page), `plans` (the plan on a plan
//! proposal's approval page, and each plan's own page), `vote` (who may vote, the form, casting a
//! vote), `live` (the event stream that refreshes the inbox), `html` (the page shell and
//! formatting shared by the pages), `invisible` (invisible and direction-changing characters in
//! what agents send, shown as markers), `respond` (security headers, redirects and error pages)
//! and `assets` (the embedded static files).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use airlock_core::{Action, Approval, ApprovalStatus};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;

use crate::api::AppState;
use crate::config::HumanConfig;
use crate::engine;

mod approvals;
mod assets;
mod html;
mod inbox;
mod invisible;
mod live;
mod oidc;
mod plans;
mod respond;
mod session;
mod vote;

/// Most approvals listed on one page.
const LIST_LIMIT: usize = 200;
/// Forms are small; anything bigger is refused before it is parsed.
const FORM_LIMIT: usize = 64 * 1024;

/// State of the UI: the API's state plus the signed-in browsers.
#[derive(Clone)]
struct Ui {
    app: AppState,
    sessions: Arc<Mutex<HashMap<String, session::SignedIn>>>,
}

impl Ui {
    fn engine(&self) -> &engine::Engine {
        &self.app.engine
    }

    fn human(&self, id: &str) -> Option<HumanConfig> {
        self.engine().config().humans.iter().find(|h| h.human.id == id).cloned()
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
        .route("/ui", get(session::root))
        .route("/ui/", get(session::root))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/login/oidc", get(oidc::start))
        .route("/ui/login/callback", get(oidc::callback))
        .route("/ui/logout", axum::routing::post(session::logout))
        .route("/ui/inbox", get(inbox::inbox))
        .route("/ui/inbox/list", get(inbox::inbox_list))
        .route("/ui/history", get(inbox::history))
        .route("/ui/approvals/{id}", get(approvals::detail).post(vote::vote))
        .route("/ui/sessions/{session}/plans/{plan}", get(plans::plan_page))
        .route("/ui/events", get(live::events))
        .route("/ui/static/airlock.css", get(assets::css))
        .route("/ui/static/airlock.js", get(assets::js))
        .route("/ui/static/favicon.svg", get(assets::icon))
        .route("/ui/{*rest}", get(respond::not_found))
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .with_state(ui)
}

#[cfg(test)]
mod tests;

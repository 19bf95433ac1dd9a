//! Data-driven engine tests: each file under `tests/engine/` holds cases written as data (a
//! configuration, a policy, then a sequence of calls, votes, results, kill switches and clock
//! moves with what each must lead to), run against the real engine on an in-memory journal and
//! a clock the case moves. No sockets, no child processes, no waiting: the whole set runs in
//! well under a second. `engine_cases_on_postgres` runs every case again with the journal in
//! PostgreSQL (a schema of its own per case, in a test database), so that the engine behaves
//! the same on it.
//!
//! The format (TOML), shared settings at the top of a file and one `[[case]]` per scenario:
//!
//! ```toml
//! config = "…airlock.toml…"        # agents, humans, upstreams, guards, approvals
//! policy = "…rego…"
//! [[case]]
//! name = "what the case shows"
//! steps = [
//!   { call = "nodepool.scale", args = { count = 3 }, as = "a1", expect = { status = "pending_approval", rules = ["SC1"] } },
//!   { vote = "a1", human = "alice", verdict = "approve", expect = { status = "approved" } },
//!   { advance = 31 },
//!   { check = "a1", expect = { status = "expired" } },
//! ]
//! ```
//!
//! A file (or a case) may list the tools upstreams offer, with their input schemas:
//! `tools = { "infra__scale" = { type = "object", properties = { n = { type = "integer" } } } }`.
//!
//! Steps: `open` (a session alias, opened now; `for-{human}` claims that requester; optional
//! `agent`), `call` (optional `agent`, `session`, `args`, `key`, `annotations`, `server` (the
//! virtual server it came through), `as`), `vote`
//! (`human`, `verdict`, `comment`, `totp = "current" | "…"`), `report` (the agent's result for
//! an action it runs: `ok`, `cost_usd`), `claim` (take an approved upstream action for
//! execution), `send` (the moment of sending an `executing` upstream action: the last
//! kill-switch check; the call then stays in flight until `finish` or `abandon`), `finish`
//! (record an upstream call's outcome: `ok`, `error`, `cost_usd`, and `answered = false` for a
//! call that got no answer), `abandon` (the task running a sent call goes away),
//! `kill` / `release`, `resume` / `close` (a session), `unlock` (an admin lifts a human's TOTP
//! lock), `plan` (a plan proposed in the session, as the body of `POST /v1/sessions/{id}/plans`;
//! `as` names the proposal's action, which `vote` and `check` take), `advance` (seconds on the
//! clock; the
//! engine's expiry sweep runs after each move, as the server's background task would) and
//! `check` (an action, or a session with `session`). `expect` keys: `status`, `rules` (the rule
//! ids of the reasons, in order), `outcome` (`new`, `joined`, `replayed`), `decided_by`,
//! `error` (a substring of the refusal), `refused` (the rule of a refused vote or resume),
//! `session_status`, `claim` (`run`, `running`, `finished`, `not_runnable`), `gate` (`open`,
//! `closed`: whether `send` sent the call), `in_flight_cancelled` (with `check`: whether the
//! call `send` sent has been cancelled since, by a kill switch), `requester` (the human an
//! opened session acts for, or `nobody`), `notified` (every webhook notification queued
//! so far, by event name) and `journaled` (`{ kind, rule }`: the latest journal event about the
//! step's action, and the rule of its reason).
//!
//! After every case, each decision that reached policy is decided again from its journaled
//! input and facts with the same pipeline function (`airlock_core::pipeline::conclude`) and
//! must come out the same: replay equals live.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_core::pipeline::{self, PolicyAnswer, PolicyFacts};
use airlock_core::{ActionResult, Decision, KillScope, Reporter, Verdict};
use airlock_policy::Policy;
use airlock_server::Config;
use airlock_server::engine::{
    ActionRequest, CallEnd, Claim, Engine, Error, Gate, ManualClock, Outcome, PlanProposal, ResultReport, Sending,
    SessionCloser, VoteRequest,
};
use airlock_store::Store;
use chrono::{TimeZone, Utc};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

#[path = "engine/mcp_idle.rs"]
mod mcp_idle;
#[path = "engine/plan_handoffs.rs"]
mod plan_handoffs;
#[path = "engine/plan_stuck.rs"]
mod plan_stuck;

/// Base32 TOTP secret that cases give to humans as `totp = "env:TOTP"`.
const TOTP: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    config: String,
    policy: String,
    /// The tools the upstreams list: full name (`{upstream}__{tool}`) → its `inputSchema`.
    #[serde(default)]
    tools: BTreeMap<String, Value>,
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// Replaces the file's config for this case.
    config: Option<String>,
    /// Replaces the file's policy for this case.
    policy: Option<String>,
    /// Replaces the file's listed tools for this case.
    tools: Option<BTreeMap<String, Value>>,
    steps: Vec<Step>,
}

/// Tools listed by upstreams, as a case writes them.
struct Listed(Vec<(String, rmcp::model::Tool)>);

impl Listed {
    fn new(name: &str, tools: &BTreeMap<String, Value>) -> Listed {
        let tools = tools
            .iter()
            .map(|(full, schema)| {
                let (upstream, tool) =
                    full.split_once("__").unwrap_or_else(|| panic!("{name}: tool `{full}` is not `upstream__tool`"));
                let Value::Object(schema) = schema.clone() else {
                    panic!("{name}: the schema of `{full}` is no object")
                };
                (upstream.to_string(), rmcp::model::Tool::new(tool.to_string(), "listed", Arc::new(schema)))
            })
            .collect();
        Listed(tools)
    }
}

impl airlock_server::input_schema::ListedTools for Listed {
    fn tool(&self, upstream: &str, name: &str) -> Option<rmcp::model::Tool> {
        self.0.iter().find(|(u, t)| u == upstream && t.name == name).map(|(_, t)| t.clone())
    }

    fn tools(&self) -> Vec<(String, rmcp::model::Tool)> {
        self.0.clone()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    open: Option<String>,
    call: Option<String>,
    vote: Option<String>,
    report: Option<String>,
    claim: Option<String>,
    send: Option<String>,
    finish: Option<String>,
    abandon: Option<String>,
    kill: Option<String>,
    release: Option<String>,
    resume: Option<String>,
    close: Option<String>,
    advance: Option<i64>,
    check: Option<String>,
    unlock: Option<String>,
    plan: Option<Value>,
    // Arguments of the steps above.
    agent: Option<String>,
    session: Option<String>,
    args: Option<Value>,
    key: Option<String>,
    annotations: Option<Value>,
    server: Option<String>,
    #[serde(rename = "as")]
    alias: Option<String>,
    human: Option<String>,
    verdict: Option<String>,
    comment: Option<String>,
    totp: Option<String>,
    ok: Option<bool>,
    error: Option<String>,
    cost_usd: Option<f64>,
    answered: Option<bool>,
    target: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    expect: Expect,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: Option<String>,
    rules: Option<Vec<String>>,
    outcome: Option<String>,
    decided_by: Option<String>,
    error: Option<String>,
    refused: Option<String>,
    session_status: Option<String>,
    claim: Option<String>,
    /// Whether `send` sent the call (`open`) or a kill switch stopped it (`closed`).
    gate: Option<String>,
    /// Whether the call in flight under this step's action was cancelled.
    in_flight_cancelled: Option<bool>,
    /// The human an opened session acts for (`nobody` for none).
    requester: Option<String>,
    /// Every notification in the outbox so far, by event name, oldest first.
    notified: Option<Vec<String>>,
    /// Whether the plan of the step's session (`s1` by default) shows as stuck.
    plan_stuck: Option<bool>,
    /// Whether every step of that plan is done.
    plan_finished: Option<bool>,
    /// The latest journal event about the action (`kind`, and `rule` of its `reason` if any).
    journaled: Option<Journaled>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Journaled {
    kind: String,
    rule: Option<String>,
}

struct Run {
    name: String,
    engine: Engine,
    clock: Arc<ManualClock>,
    store: Arc<dyn Store>,
    policy: Policy,
    /// Case alias → airlock session id.
    sessions: HashMap<String, String>,
    /// Case alias → action id (`last` is the latest call).
    actions: HashMap<String, String>,
    /// Case alias → kill switch id.
    kills: HashMap<String, String>,
    /// Case alias → a call `send` sent, with its cancellation.
    sent: HashMap<String, (Sending, CancellationToken)>,
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/engine")
}

/// Where the cases keep their journals.
enum Journal {
    Memory,
    /// A schema per case, numbered, in one test database.
    Postgres(airlock_test_postgres::TestDatabase, std::sync::atomic::AtomicUsize),
}

impl Journal {
    async fn store(&self) -> Arc<dyn Store> {
        match self {
            Journal::Memory => Arc::new(airlock_store::MemoryStore::new()),
            Journal::Postgres(db, cases) => {
                let n = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let url = db.schema(&format!("case_{n}")).await;
                let options = airlock_store::PostgresOptions::parse(&url).unwrap();
                Arc::new(airlock_store::PostgresStore::open(options).await.unwrap())
            }
        }
    }
}

async fn start(name: &str, config: &str, policy: &str, tools: &BTreeMap<String, Value>) -> Run {
    start_on(&Journal::Memory, name, config, policy, tools).await
}

async fn start_on(journal: &Journal, name: &str, config: &str, policy: &str, tools: &BTreeMap<String, Value>) -> Run {
    let base = cases_dir().join("airlock.toml");
    let env = BTreeMap::from([("TOTP".to_string(), TOTP.to_string())]);
    let config = Config::parse(config, &base, &env).unwrap_or_else(|e| panic!("{name}: config: {e}"));
    let policy = Policy::from_sources(&cases_dir(), vec![("policy.rego".into(), policy.into())], &Default::default())
        .unwrap_or_else(|e| panic!("{name}: policy: {e}"));
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()));
    let store = journal.store().await;
    let engine = Engine::start_with_clock(Arc::new(config), policy.clone(), store.clone(), clock.clone())
        .await
        .unwrap_or_else(|e| panic!("{name}: engine: {e}"));
    engine.attach_listed_tools(Arc::new(Listed::new(name, tools)));
    Run {
        name: name.to_string(),
        engine,
        clock,
        store,
        policy,
        sessions: HashMap::new(),
        actions: HashMap::new(),
        kills: HashMap::new(),
        sent: HashMap::new(),
    }
}

impl Run {
    /// Has `human` approve version 1 of `plan`, which must then be in force.
    async fn approve_plan(&mut self, plan: &airlock_server::engine::PlanView, human: &str) {
        self.actions.insert("p".into(), plan.versions[0].action_id.clone());
        let vote = Step {
            vote: Some("p".into()),
            human: Some(human.into()),
            expect: Expect { status: Some("succeeded".into()), ..Default::default() },
            ..Default::default()
        };
        self.step(0, &vote).await;
    }

    fn agent(&self, id: Option<&str>) -> airlock_server::config::AgentConfig {
        let agents = &self.engine.config().agents;
        match id {
            None => agents[0].clone(),
            Some(id) => agents
                .iter()
                .find(|a| a.agent.id == id)
                .unwrap_or_else(|| panic!("{}: no agent `{id}`", self.name))
                .clone(),
        }
    }

    fn human(&self, id: &str) -> airlock_server::config::HumanConfig {
        self.engine
            .config()
            .humans
            .iter()
            .find(|h| h.human.id == id)
            .unwrap_or_else(|| panic!("{}: no human `{id}`", self.name))
            .clone()
    }

    async fn session(&mut self, alias: Option<&str>, agent: &airlock_server::config::AgentConfig) -> String {
        let alias = alias.unwrap_or("s1").to_string();
        if let Some(id) = self.sessions.get(&alias) {
            return id.clone();
        }
        let on_behalf_of = alias.strip_prefix("for-").map(str::to_string);
        let s = self
            .engine
            .open_session(agent, format!("case session {alias}"), BTreeMap::new(), on_behalf_of)
            .await
            .unwrap_or_else(|e| panic!("{}: open session: {e}", self.name));
        self.sessions.insert(alias, s.id.clone());
        s.id
    }

    fn action(&self, alias: &str) -> String {
        self.actions.get(alias).cloned().unwrap_or_else(|| panic!("{}: no action `{alias}`", self.name))
    }

    async fn step(&mut self, i: usize, step: &Step) {
        let at = format!("{} (step {})", self.name, i + 1);
        let e = &step.expect;
        if let Some(alias) = &step.open {
            // Opens a session on purpose (calls open theirs on first use): `for-{human}` claims
            // that requester, and `expect.error` or `expect.refused` says how it is refused.
            let agent = self.agent(step.agent.as_deref());
            let on_behalf_of = alias.strip_prefix("for-").map(str::to_string);
            match self.engine.open_session(&agent, format!("case session {alias}"), BTreeMap::new(), on_behalf_of).await
            {
                Ok(s) => {
                    assert!(e.error.is_none() && e.refused.is_none(), "{at}: the session was opened");
                    if let Some(want) = &e.requester {
                        assert_eq!(s.on_behalf_of.as_deref().unwrap_or("nobody"), want, "{at}: requester");
                    }
                    self.sessions.insert(alias.clone(), s.id);
                }
                Err(err) => expect_error(&at, &err, e),
            }
        } else if let Some(tool) = &step.call {
            let agent = self.agent(step.agent.as_deref());
            let session = self.session(step.session.as_deref(), &agent).await;
            let request = ActionRequest {
                tool: tool.clone(),
                arguments: step.args.clone().unwrap_or_else(|| serde_json::json!({})),
                justification: step.comment.clone().unwrap_or_else(|| "case".into()),
                idempotency_key: step.key.clone(),
                reported_annotations: step.annotations.clone(),
                traceparent: None,
                mcp_session: None,
                server: step.server.clone(),
                plan_lease: None,
            };
            match self.engine.submit(&agent, &session, request).await {
                Ok(sub) => {
                    assert!(e.error.is_none(), "{at}: expected an error, got {:?}", sub.view.action.status);
                    let id = sub.view.action.id.clone();
                    if let Some(want) = &e.outcome {
                        let got = match sub.outcome {
                            Outcome::New => "new",
                            Outcome::Joined => "joined",
                            Outcome::Replayed => "replayed",
                        };
                        assert_eq!(got, want, "{at}: outcome");
                    }
                    check_decision(&at, &sub.view.action.decision, e);
                    self.check_status(&at, &id, e).await;
                    self.actions.insert("last".into(), id.clone());
                    if let Some(alias) = &step.alias {
                        self.actions.insert(alias.clone(), id);
                    }
                }
                Err(err) => expect_error(&at, &err, e),
            }
        } else if let Some(alias) = &step.vote {
            let id = self.action(alias);
            let view = self.engine.action_view(&id, None).await.unwrap();
            let approval = view.approval.unwrap_or_else(|| panic!("{at}: action `{alias}` has no approval"));
            let human = self.human(step.human.as_deref().unwrap_or_else(|| panic!("{at}: vote needs `human`")));
            let totp = match step.totp.as_deref() {
                Some("current") => Some(airlock_server::mfa::code_at(TOTP, self.engine.now()).unwrap()),
                other => other.map(str::to_string),
            };
            let verdict = match step.verdict.as_deref().unwrap_or("approve") {
                "approve" => Verdict::Approve,
                "deny" => Verdict::Deny,
                v => panic!("{at}: unknown verdict `{v}`"),
            };
            let comment = step.comment.clone().unwrap_or_else(|| "looks right".into());
            let result = self.engine.vote(&human, &approval.id, VoteRequest { verdict, comment, totp }).await;
            match result {
                Ok(_) => assert!(e.refused.is_none() && e.error.is_none(), "{at}: the vote was accepted"),
                Err(err) => expect_error(&at, &err, e),
            }
            self.check_status(&at, &id, e).await;
        } else if let Some(alias) = &step.report {
            let id = self.action(alias);
            let agent = self.agent(step.agent.as_deref());
            let report = ResultReport {
                ok: step.ok.unwrap_or(true),
                output: serde_json::json!({"done": true}),
                error: step.error.clone(),
                cost_usd: step.cost_usd,
            };
            match self.engine.report_result(&agent, &id, report).await {
                Ok(_) => assert!(e.error.is_none(), "{at}: the report was accepted"),
                Err(err) => expect_error(&at, &err, e),
            }
            self.check_status(&at, &id, e).await;
        } else if let Some(alias) = &step.claim {
            let id = self.action(alias);
            match self.engine.claim_execution(&id).await {
                Ok(claim) => {
                    let got = match claim {
                        Claim::Run(_) => "run",
                        Claim::Running(_) => "running",
                        Claim::Finished(_) => "finished",
                        Claim::NotRunnable(_) => "not_runnable",
                    };
                    assert!(e.refused.is_none() && e.error.is_none(), "{at}: the claim was granted: {got}");
                    if let Some(want) = &e.claim {
                        assert_eq!(got, want, "{at}: claim");
                    }
                }
                Err(err) => expect_error(&at, &err, e),
            }
            self.check_status(&at, &id, e).await;
        } else if let Some(alias) = &step.finish {
            let id = self.action(alias);
            let ok = step.ok.unwrap_or(true);
            let result = ActionResult {
                ok,
                output: Value::Null,
                error: step.error.clone().or_else(|| (!ok).then(|| "the tool failed".into())),
                reported_by: Reporter::Upstream,
                duration_ms: Some(1),
                cost_usd: step.cost_usd,
                at: self.engine.now(),
            };
            let end = if step.answered.unwrap_or(true) { CallEnd::Answered } else { CallEnd::Unanswered };
            let recorded = match self.sent.remove(alias) {
                Some((sending, _)) => sending.finish(result, end).await,
                None => self.engine.record_execution(&id, result, end).await,
            };
            match recorded {
                Ok(_) => assert!(e.error.is_none(), "{at}: the result was recorded"),
                Err(err) => expect_error(&at, &err, e),
            }
            self.check_status(&at, &id, e).await;
        } else if let Some(alias) = &step.send {
            let id = self.action(alias);
            let action = self.engine.action_view(&id, None).await.unwrap().action;
            let cancel = CancellationToken::new();
            match self.engine.begin_send(&action, cancel.clone()).await {
                Ok(gate) => {
                    let got = match gate {
                        Gate::Open(sending) => {
                            self.sent.insert(alias.clone(), (sending, cancel));
                            "open"
                        }
                        Gate::Closed { .. } => "closed",
                    };
                    assert!(e.error.is_none(), "{at}: the send was answered: {got}");
                    if let Some(want) = &e.gate {
                        assert_eq!(got, want, "{at}: gate");
                    }
                }
                Err(err) => expect_error(&at, &err, e),
            }
            self.check_status(&at, &id, e).await;
        } else if let Some(alias) = &step.abandon {
            let id = self.action(alias);
            let (sending, _) = self.sent.remove(alias).unwrap_or_else(|| panic!("{at}: `{alias}` was not sent"));
            drop(sending);
            // What the dropped call leaves behind is recorded on a task of its own.
            let view = self.engine.wait_for_change(&id, None, std::time::Duration::from_secs(5)).await.unwrap();
            assert_ne!(view.action.status.as_str(), "executing", "{at}: the abandoned call stayed `executing`");
            self.check_status(&at, &id, e).await;
        } else if let Some(scope) = &step.kill {
            let scope = match scope.as_str() {
                "all" => KillScope::All,
                "agent" => KillScope::Agent,
                "upstream" => KillScope::Upstream,
                "tool" => KillScope::Tool,
                s => panic!("{at}: unknown kill scope `{s}`"),
            };
            let reason = step.reason.clone().unwrap_or_else(|| "incident".into());
            let ks = self.engine.engage_kill("root", scope, step.target.clone(), reason).await;
            match ks {
                Ok(ks) => {
                    self.kills.insert(step.alias.clone().unwrap_or_else(|| "last".into()), ks.id);
                }
                Err(err) => expect_error(&at, &err, e),
            }
        } else if let Some(alias) = &step.release {
            let id = self.kills.get(alias).cloned().unwrap_or_else(|| panic!("{at}: no kill switch `{alias}`"));
            self.engine.release_kill("root", &id).await.unwrap_or_else(|err| panic!("{at}: release: {err}"));
        } else if let Some(alias) = &step.resume {
            let id = self.sessions.get(alias).cloned().unwrap_or_else(|| panic!("{at}: no session `{alias}`"));
            let human = self.human(step.human.as_deref().unwrap_or("alice"));
            let comment = step.comment.clone().unwrap_or_else(|| "checked, carry on".into());
            match self.engine.resume_session(&human, &id, &comment).await {
                Ok(_) => assert!(e.refused.is_none() && e.error.is_none(), "{at}: the resume was accepted"),
                Err(err) => expect_error(&at, &err, e),
            }
            self.check_session(&at, alias, e).await;
        } else if let Some(alias) = &step.close {
            let id = self.sessions.get(alias).cloned().unwrap_or_else(|| panic!("{at}: no session `{alias}`"));
            let agent = self.agent(step.agent.as_deref());
            self.engine
                .close_session(SessionCloser::Agent(&agent), &id, "done")
                .await
                .unwrap_or_else(|err| panic!("{at}: close: {err}"));
            self.check_session(&at, alias, e).await;
        } else if let Some(who) = &step.unlock {
            let admin = self.human(step.human.as_deref().unwrap_or("root"));
            match self.engine.unlock_mfa(&admin, who).await {
                Ok(_) => assert!(e.refused.is_none() && e.error.is_none(), "{at}: the unlock was accepted"),
                Err(err) => expect_error(&at, &err, e),
            }
        } else if let Some(plan) = &step.plan {
            // Proposes a plan in the session; `as` names the proposal's action (vote on it).
            let agent = self.agent(step.agent.as_deref());
            let session = self.session(step.session.as_deref(), &agent).await;
            let proposal: PlanProposal =
                serde_json::from_value(plan.clone()).unwrap_or_else(|err| panic!("{at}: plan: {err}"));
            match self.engine.propose_plan(&agent, &session, None, proposal).await {
                Ok(view) => {
                    assert!(e.error.is_none(), "{at}: expected an error, got plan {}", view.id);
                    let id = view.versions.last().map(|v| v.action_id.clone()).unwrap_or_default();
                    let action = self.engine.action_view(&id, None).await.unwrap().action;
                    check_decision(&at, &action.decision, e);
                    self.check_status(&at, &id, e).await;
                    self.actions.insert("last".into(), id.clone());
                    if let Some(alias) = &step.alias {
                        self.actions.insert(alias.clone(), id);
                    }
                }
                Err(err) => expect_error(&at, &err, e),
            }
        } else if let Some(seconds) = step.advance {
            self.clock.advance(chrono::Duration::seconds(seconds));
            self.engine.expire_due().await.unwrap_or_else(|err| panic!("{at}: expiry: {err}"));
            self.engine.check_plans().await.unwrap_or_else(|err| panic!("{at}: plan monitors: {err}"));
        } else if let Some(alias) = &step.check {
            if let Some(session) = &step.session {
                self.check_session(&at, session, e).await;
            } else {
                let id = self.action(alias);
                let view = self.engine.action_view(&id, None).await.unwrap();
                check_decision(&at, &view.action.decision, e);
                self.check_status(&at, &id, e).await;
            }
        } else {
            panic!(
                "{at}: a step needs one of open, call, plan, vote, report, claim, send, finish, abandon, kill, \
                 release, resume, close, advance, check"
            );
        }
        if let Some(want) = &e.session_status
            && step.resume.is_none()
            && step.close.is_none()
            && step.check.is_none()
        {
            let alias = step.session.clone().unwrap_or_else(|| "s1".into());
            self.check_session(&at, &alias, &Expect { session_status: Some(want.clone()), ..Default::default() }).await;
        }
        if let Some(want) = e.in_flight_cancelled {
            let alias = step.check.clone().unwrap_or_else(|| panic!("{at}: `in_flight_cancelled` goes with `check`"));
            let (_, cancel) = self.sent.get(&alias).unwrap_or_else(|| panic!("{at}: no call in flight `{alias}`"));
            assert_eq!(cancel.is_cancelled(), want, "{at}: the call in flight `{alias}` cancelled");
        }
        if let Some(want) = &e.notified {
            let far = self.engine.now() + chrono::Duration::days(3650);
            let outbox = self.store.notifications_due(far, 10_000).await.unwrap();
            let got: Vec<&str> = outbox.iter().map(|n| n.event.as_str()).collect();
            assert_eq!(got, want.iter().map(String::as_str).collect::<Vec<_>>(), "{at}: notifications");
        }
        if e.plan_stuck.is_some() || e.plan_finished.is_some() {
            let alias = step.session.clone().unwrap_or_else(|| "s1".into());
            let id = self.sessions.get(&alias).cloned().unwrap_or_else(|| panic!("{at}: no session `{alias}`"));
            let plans = self.engine.plans(&id, None).await.unwrap_or_else(|err| panic!("{at}: plans: {err}"));
            let plan = plans.first().unwrap_or_else(|| panic!("{at}: session `{alias}` has no plan"));
            if let Some(want) = e.plan_stuck {
                assert_eq!(plan.stuck.is_some(), want, "{at}: plan stuck: {:?}", plan.stuck);
            }
            if let Some(want) = e.plan_finished {
                assert_eq!(plan.finished, want, "{at}: plan finished");
            }
        }
        if let Some(want) = &e.journaled {
            let alias = match &step.call {
                Some(_) => step.alias.clone().unwrap_or_else(|| "last".into()),
                None => [&step.vote, &step.report, &step.claim, &step.send, &step.finish, &step.abandon, &step.check]
                    .into_iter()
                    .flatten()
                    .next()
                    .cloned()
                    .unwrap_or_else(|| panic!("{at}: `journaled` needs a step about an action")),
            };
            self.check_journal(&at, &self.action(&alias), want).await;
        }
    }

    async fn check_journal(&self, at: &str, action_id: &str, want: &Journaled) {
        let view = self.engine.action_view(action_id, None).await.unwrap();
        let events = self.store.events(&view.action.session_id).await.unwrap();
        let latest = events
            .iter()
            .rev()
            .find(|ev| ev.payload["action_id"] == action_id)
            .unwrap_or_else(|| panic!("{at}: no event about {action_id}"));
        assert_eq!(latest.kind, want.kind, "{at}: latest event about {action_id}: {}", latest.payload);
        if let Some(rule) = &want.rule {
            assert_eq!(latest.payload["reason"]["rule"], rule.as_str(), "{at}: {}", latest.payload);
        }
    }

    async fn check_status(&self, at: &str, action_id: &str, e: &Expect) {
        if let Some(want) = &e.status {
            let view = self.engine.action_view(action_id, None).await.unwrap();
            assert_eq!(
                view.action.status.as_str(),
                want,
                "{at}: status of {action_id}: {:?}",
                view.action.decision.reasons
            );
        }
    }

    async fn check_session(&self, at: &str, alias: &str, e: &Expect) {
        if let Some(want) = &e.session_status {
            let id = self.sessions.get(alias).unwrap_or_else(|| panic!("{at}: no session `{alias}`"));
            let s = self.engine.session(id, None).await.unwrap();
            let got = serde_json::to_value(s.status).unwrap();
            assert_eq!(got.as_str(), Some(want.as_str()), "{at}: session status ({:?})", s.status_reason);
        }
    }

    /// Replay equals live: every decision that reached policy comes out the same from its
    /// journaled input and facts.
    async fn replay_equals_live(&self) -> usize {
        let mut checked = 0;
        for session in self.sessions.values() {
            for event in self.store.events(session).await.unwrap() {
                if event.kind != "action.decided" || event.payload["input"].is_null() {
                    continue;
                }
                let recorded: Decision = serde_json::from_value(event.payload["decision"].clone()).unwrap();
                let facts: PolicyFacts = serde_json::from_value(event.payload["facts"].clone())
                    .unwrap_or_else(|e| panic!("{}: decision without facts: {e}", self.name));
                let eval = self.policy.evaluate(&event.payload["input"]);
                let answer =
                    PolicyAnswer { output: eval.output, revision: self.policy.revision().to_string(), eval_us: 0 };
                let again = pipeline::conclude(answer, &facts);
                assert_eq!(
                    Decision { eval_us: 0, ..recorded },
                    again,
                    "{}: replaying {} gave another decision",
                    self.name,
                    event.payload["action_id"]
                );
                checked += 1;
            }
        }
        checked
    }
}

fn check_decision(at: &str, d: &Decision, e: &Expect) {
    if let Some(want) = &e.rules {
        let got: Vec<&str> = d.reasons.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(got, want.iter().map(String::as_str).collect::<Vec<_>>(), "{at}: rules: {:?}", d.reasons);
    }
    if let Some(want) = &e.decided_by {
        assert_eq!(d.decided_by.as_str(), want, "{at}: decided_by");
    }
}

fn expect_error(at: &str, err: &Error, e: &Expect) {
    match (err, &e.refused, &e.error) {
        (Error::Forbidden { rule, .. }, Some(want), _) => assert_eq!(rule, want, "{at}: refused by: {err}"),
        (_, None, Some(want)) => assert!(err.to_string().contains(want.as_str()), "{at}: error `{err}` lacks `{want}`"),
        _ => panic!("{at}: unexpected error: {err}"),
    }
}

#[tokio::test]
async fn engine_cases() {
    run_cases(&Journal::Memory).await;
}

#[tokio::test]
async fn engine_cases_on_postgres() {
    let db = airlock_test_postgres::TestDatabase::create().await;
    run_cases(&Journal::Postgres(db, Default::default())).await;
}

async fn run_cases(journal: &Journal) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no case files in {}", cases_dir().display());
    let (mut cases, mut steps, mut replayed) = (0, 0, 0);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let file: File = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        for case in &file.cases {
            let name = format!("{stem}: {}", case.name);
            let config = case.config.as_deref().unwrap_or(&file.config);
            let policy = case.policy.as_deref().unwrap_or(&file.policy);
            let tools = case.tools.as_ref().unwrap_or(&file.tools);
            let mut run = start_on(journal, &name, config, policy, tools).await;
            for (i, step) in case.steps.iter().enumerate() {
                run.step(i, step).await;
                steps += 1;
            }
            replayed += run.replay_equals_live().await;
            cases += 1;
        }
    }
    println!("{cases} engine cases, {steps} steps, {replayed} decisions replayed");
    assert!(cases >= 30, "only {cases} engine cases");
}

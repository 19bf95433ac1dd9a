//! The MCP gateway: upstream tools offered to agents under `{upstream}__{tool}` on `/mcp`, or
//! under a virtual server's names on `/mcp/{server}` (see [`crate::servers`]), and every call run
//! through the decision pipeline before it reaches the upstream.
//!
//! The flow of one `tools/call`: submit to the [`Engine`] (digest, join, guards, policy, tier
//! floor) → denied: a tool error that gives the reasons → held for approval: wait up to
//! `[mcp] approval_wait_seconds` with progress notifications, then either run it or return a tool
//! error that names the approval and says to retry → allowed or approved: `executing` is
//! journaled, the upstream is called with its time limit, and the result is journaled.

mod plans;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_core::sync::lock;
use airlock_core::{Action, ActionResult, ActionStatus, Approval, Reason, Reporter};
use airlock_mcp::front::{CallerIdentity, Gateway, GatewayError, ToolCall, error_result};
use airlock_mcp::{UpstreamError, Upstreams};
use chrono::Utc;
use rmcp::model::{CallToolResult, ContentBlock, Tool, ToolAnnotations};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::catalog::TOOL_SEPARATOR;
use crate::config::AgentConfig;
use crate::engine::{ActionRequest, CallEnd, Engine, Gate};
use crate::executor::{self, Carried, Run};
use crate::mcp_sessions::{Ended, McpSessions};
use crate::servers::{Lookup, Offer, Offers, VirtualServer};

/// The gateway between MCP and the pipeline. Cheap to share behind an `Arc`.
pub struct McpGateway {
    engine: Engine,
    upstreams: Upstreams,
    agents: HashMap<String, AgentConfig>,
    approval_wait: Duration,
    /// Which agent opened each MCP session, on which endpoint, the airlock session behind it,
    /// and its use.
    mcp_sessions: McpSessions,
    /// The virtual servers, in configuration order.
    servers: Vec<VirtualServer>,
    /// What each virtual server offers, computed once per change of the upstreams' tools (the
    /// value of `changes` it was computed at).
    offers: std::sync::Mutex<Option<(u64, Offers)>>,
    changes: tokio::sync::watch::Receiver<u64>,
    /// Forwarded-message records waiting for the journal.
    unjournaled: Arc<std::sync::atomic::AtomicUsize>,
}

/// How many forwarded-message records may wait for the journal at once: beyond this (an
/// upstream flooding log messages), records are dropped and counted, and the messages still go.
const FORWARDED_BACKLOG: usize = 1024;

impl std::fmt::Debug for McpGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpGateway").finish_non_exhaustive()
    }
}

fn reasons_text(action: &Action) -> String {
    action.decision.reasons.iter().map(|r| format!("[{}] {}", r.rule, r.msg)).collect::<Vec<_>>().join("; ")
}

fn short_revision(rev: &str) -> &str {
    rev.get(..19).unwrap_or(rev)
}

impl McpGateway {
    /// Builds the gateway.
    pub fn new(engine: Engine, upstreams: Upstreams) -> McpGateway {
        // Tools the upstreams list are known tools: they keep their names in metric labels.
        engine.attach_upstreams(upstreams.clone());
        let agents = engine.config().agents.iter().map(|a| (a.agent.id.clone(), a.clone())).collect();
        let approval_wait = engine.config().mcp.approval_wait;
        let mcp_sessions = McpSessions::new(engine.config().mcp.session_idle);
        let servers = engine.config().servers.iter().map(VirtualServer::new).collect();
        let changes = upstreams.subscribe();
        McpGateway {
            engine,
            upstreams,
            agents,
            approval_wait,
            mcp_sessions,
            servers,
            offers: std::sync::Mutex::new(None),
            changes,
            unjournaled: Default::default(),
        }
    }

    /// rmcp created MCP session `mcp_session` for `agent_id` on the endpoint of `server` (`None`:
    /// `/mcp`): from now on only that agent may use it, and only there.
    pub fn mcp_session_opened(&self, mcp_session: &str, agent_id: &str, server: Option<&str>) {
        self.mcp_sessions.opened(mcp_session, agent_id, server, self.engine.now());
    }

    /// A request of `agent_id` carrying `mcp_session` arrives at the endpoint of `server`. `None`
    /// when that agent did not open it there (someone else's session, one of another endpoint, or
    /// none at all): the request must be answered as for an unknown session. Otherwise the
    /// session counts as in use until the returned guard drops.
    pub fn begin_mcp_request(
        self: &Arc<Self>,
        mcp_session: &str,
        agent_id: &str,
        server: Option<&str>,
    ) -> Option<McpRequest> {
        self.mcp_sessions
            .begin(mcp_session, agent_id, server, self.engine.now())
            .then(|| McpRequest { gateway: self.clone(), mcp_session: mcp_session.to_string() })
    }

    /// The virtual server named `name`.
    pub fn server(&self, name: &str) -> Option<&VirtualServer> {
        self.servers.iter().find(|s| s.name() == name)
    }

    /// Every virtual server, in configuration order.
    pub fn servers(&self) -> &[VirtualServer] {
        &self.servers
    }

    /// What each virtual server offers now, in configuration order: computed again only when an
    /// upstream's tools (or health) changed since the last time.
    pub fn offers(&self) -> Offers {
        // Read the version before the tools: a change in between makes the next caller compute
        // again, never keeps an old list.
        let version = *self.changes.borrow();
        if let Some((at, offers)) = &*lock(&self.offers)
            && *at == version
        {
            return offers.clone();
        }
        let tools = if self.servers.is_empty() { Vec::new() } else { self.upstreams.tools() };
        let shown = |full: &str, tool: &Tool| self.shown(full, tool);
        let offers: Offers = Arc::new(self.servers.iter().map(|s| Arc::new(Offer::new(s, &tools, &shown))).collect());
        *lock(&self.offers) = Some((version, offers.clone()));
        offers
    }

    /// Virtual server `server` and what it offers now.
    fn offer(&self, server: &str) -> Option<(&VirtualServer, Arc<Offer>)> {
        let offers = self.offers();
        let i = self.servers.iter().position(|s| s.name() == server)?;
        Some((self.servers.get(i)?, offers.get(i)?.clone()))
    }

    /// The full name (`{upstream}__{tool}`) of the tool that `name` reaches on virtual server
    /// `server`, or what to tell the agent when it reaches none.
    pub fn resolve(&self, server: &str, name: &str) -> Result<String, String> {
        let Some((vs, offer)) = self.offer(server) else {
            return Err(format!("airlock: there is no server `{server}`"));
        };
        let lookup = offer.lookup(name);
        if let Lookup::Tool(full) = lookup {
            return Ok(full.to_string());
        }
        let down: Vec<String> = self
            .upstreams
            .health()
            .into_iter()
            .filter(|(u, h)| !matches!(h, airlock_mcp::Health::Up { .. }) && vs.could_name(u, name))
            .map(|(u, _)| u)
            .collect();
        Err(crate::servers::not_offered(server, name, &lookup, &down))
    }

    /// An upstream's tool as clients see it under the full name `full`: annotations after local
    /// overrides.
    fn shown(&self, full: &str, tool: &Tool) -> Tool {
        let reported = tool.annotations.as_ref().and_then(|a| serde_json::to_value(a).ok());
        let info = self.engine.catalog().resolve(full, reported.as_ref());
        let mut t = tool.clone();
        t.name = full.to_string().into();
        if info.annotations.as_object().is_some_and(|m| !m.is_empty()) {
            t.annotations = serde_json::from_value::<ToolAnnotations>(info.annotations).ok().or(t.annotations);
        }
        t
    }

    /// The client ended MCP session `mcp_session` (HTTP `DELETE /mcp`): the airlock session
    /// behind it is closed, which cancels its pending approvals and approved actions nobody will
    /// now run. Only the agent that owns it can end it. A session that never made a call has
    /// nothing to close.
    pub async fn end_mcp_session(&self, mcp_session: &str, agent_id: &str) {
        // Only the owner's DELETE unbinds it: another agent that learned the id ends nothing.
        let Some(ended) = self.mcp_sessions.end(mcp_session, agent_id) else { return };
        self.close_behind(ended, "the MCP client ended its session").await;
    }

    /// Forgets every MCP session idle for `[mcp] session_idle_seconds` and closes the airlock
    /// sessions behind them, as [`McpGateway::end_mcp_session`] does. Returns the MCP session
    /// ids, for the transport to close too.
    pub async fn expire_idle_mcp_sessions(&self) -> Vec<String> {
        let expired = self.mcp_sessions.expire(self.engine.now());
        let reason = format!("the MCP session was idle for {}s", self.mcp_sessions.idle().as_secs());
        let mut ids = Vec::with_capacity(expired.len());
        for ended in expired {
            ids.push(ended.mcp_session.clone());
            self.close_behind(ended, &reason).await;
        }
        ids
    }

    /// Closes the airlock session behind an MCP session that ended, if it has one.
    async fn close_behind(&self, ended: Ended, reason: &str) {
        let mcp_session = crate::otel::mcp_session_digest(&ended.mcp_session);
        let (Some(session_id), Some(agent)) = (ended.session_id, self.agent_of(&ended.agent_id, None)) else {
            tracing::debug!(%mcp_session, reason, "MCP session ended before any call");
            return;
        };
        let closer = crate::engine::SessionCloser::Agent(&agent);
        match self.engine.close_session(closer, &session_id, reason).await {
            Ok(_) => {
                tracing::info!(session = %session_id, %mcp_session, reason, "MCP session ended; airlock session closed")
            }
            Err(e) => tracing::debug!(session = %session_id, error = %e, "MCP session ended; session not closed"),
        }
    }

    /// The calling agent as this request's authentication made it (an access token's agent
    /// differs from token to token), else its `[[agents]]` entry or as a token last made it.
    fn agent_of(&self, agent_id: &str, principal: Option<&airlock_mcp::front::Principal>) -> Option<Arc<AgentConfig>> {
        if let Some(agent) = principal.and_then(|p| p.clone().downcast::<AgentConfig>().ok())
            && agent.agent.id == agent_id
        {
            return Some(agent);
        }
        self.agents.get(agent_id).map(|a| Arc::new(a.clone())).or_else(|| self.engine.agent(agent_id))
    }

    /// The engine behind it.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The upstream connections.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// Annotations the upstream reported for a full tool name, as JSON.
    pub fn reported_annotations(&self, tool: &str) -> Option<Value> {
        let (upstream, name) = tool.split_once(TOOL_SEPARATOR)?;
        let t = self.upstreams.tool(upstream, name)?;
        t.annotations.as_ref().and_then(|a| serde_json::to_value(a).ok())
    }

    /// Runs an action that is `executing` (just allowed, or just claimed after approval) against
    /// its upstream and records the outcome.
    /// `back` carries the upstream's progress, requests and log messages to an MCP caller.
    pub async fn execute(
        &self,
        action: &Action,
        cancel: CancellationToken,
        mut back: airlock_mcp::Backchannel,
    ) -> (Action, CallToolResult) {
        if let Some(caller) = &mut back.caller {
            let redacts = !action.decision.redact.is_empty();
            caller.action = Some(airlock_mcp::ActionRef { id: action.id.clone(), redacts });
        }
        let (Some(upstream), arguments) = (action.upstream.clone(), action.arguments.clone()) else {
            return (action.clone(), error_result("internal error: not an upstream action"));
        };
        let arguments = match arguments {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let started = Instant::now();
        let tracing = self.engine.tracing();
        let mut span = tracing.start(
            format!("tools/call {}", action.name),
            opentelemetry::trace::SpanKind::Client,
            action.trace.as_ref(),
            std::time::SystemTime::now(),
            vec![
                opentelemetry::KeyValue::new(crate::otel::attr::MCP_METHOD, "tools/call"),
                opentelemetry::KeyValue::new(crate::otel::attr::GEN_AI_TOOL_NAME, action.name.clone()),
                opentelemetry::KeyValue::new(crate::otel::attr::UPSTREAM, upstream.clone()),
            ],
        );
        let traceparent = span.reference().map(|r| crate::otel::traceparent(&r));
        // The last kill-switch check, at the moment of sending; from here on a kill switch
        // engaged while the call is out cancels it.
        let cancel = cancel.child_token();
        let sending = match self.engine.begin_send(action, cancel.clone()).await {
            Ok(Gate::Open(sending)) => sending,
            Ok(Gate::Closed { action: withdrawn, reason }) => {
                span.error("a kill switch stopped the call before it was sent".to_string());
                span.end_at(std::time::SystemTime::now());
                let text = format!(
                    "airlock did not send `{}` (action {}, now `{}`): [{}] {}",
                    withdrawn.tool, withdrawn.id, withdrawn.status, reason.rule, reason.msg
                );
                return (*withdrawn, error_result(text));
            }
            Err(e) => {
                // A kill switch covers the call and its withdrawal could not be journaled. It is
                // not sent; the action stays `executing` until the next start marks it `unknown`.
                tracing::error!(action = %action.id, error = %e, "a call stopped by a kill switch could not be recorded");
                span.error(format!("not sent: {e}"));
                span.end_at(std::time::SystemTime::now());
                let text =
                    format!("airlock did not send the call (a kill switch covers it) and could not record that: {e}");
                return (action.clone(), error_result(text));
            }
        };
        let outcome = self.upstreams.call(&upstream, &action.name, arguments, cancel, traceparent, back).await;
        let killed = sending.killed();
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        metrics::histogram!(crate::telemetry::UPSTREAM_SECONDS, "upstream" => upstream.clone())
            .record(started.elapsed().as_secs_f64());
        if !matches!(&outcome, Ok(r) if r.is_error != Some(true)) {
            metrics::counter!(crate::telemetry::UPSTREAM_ERRORS, "upstream" => upstream.clone()).increment(1);
        }
        // A call that was sent and got no answer may have acted at the upstream.
        let end = match &outcome {
            Err(e) if e.outcome_unknown() => CallEnd::Unanswered,
            _ => CallEnd::Answered,
        };
        let (result, returned) = match outcome {
            Ok(res) => {
                let ok = !res.is_error.unwrap_or(false);
                let error = (!ok).then(|| content_text(&res.content));
                let output = serde_json::to_value(&res).unwrap_or(Value::Null);
                let cost_usd = reported_cost(&action.tool, &output);
                (
                    ActionResult {
                        ok,
                        output,
                        error,
                        reported_by: Reporter::Upstream,
                        duration_ms: Some(duration_ms),
                        cost_usd,
                        at: Utc::now(),
                    },
                    res,
                )
            }
            Err(e) => {
                let msg = upstream_error_text(&action.tool, &e, killed.as_ref());
                let r = ActionResult {
                    ok: false,
                    output: Value::Null,
                    error: Some(msg.clone()),
                    reported_by: Reporter::Upstream,
                    duration_ms: Some(duration_ms),
                    cost_usd: None,
                    at: Utc::now(),
                };
                (r, error_result(msg))
            }
        };
        if !result.ok {
            // A tool's own error text is content, exported only as captured content is (and
            // after `redact`); airlock's errors (time-out, unavailable, cancelled) are not.
            let tool_text = !result.output.is_null();
            let shown = if tool_text && !(tracing.capture_content() && action.decision.redact.is_empty()) {
                "the tool reported an error (its text is exported only with capture_content and no redact paths)"
                    .to_string()
            } else {
                result.error.clone().unwrap_or_default()
            };
            span.error(shown);
        }
        if let Some(attribute) = tracing.result_attribute(action, &result.output) {
            span.set(vec![attribute]);
        }
        span.end_at(std::time::SystemTime::now());
        match sending.finish(result, end).await {
            Ok(recorded) => (recorded, returned),
            Err(e) => {
                tracing::error!(action = %action.id, error = %e, "could not record an upstream result");
                (action.clone(), returned)
            }
        }
    }

    /// Waits while an action is pending approval, at most `limit`, reporting progress.
    async fn wait_for_approval(&self, action: &Action, limit: Duration, call: &ToolCall) -> Action {
        let deadline = Instant::now() + limit;
        let mut current = action.clone();
        let started = Instant::now();
        let approval = action.approval_id.clone().unwrap_or_default();
        while current.status == ActionStatus::PendingApproval {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() || call.cancel.is_cancelled() {
                break;
            }
            (call.progress)(format!("waiting for human approval {approval} ({}s)", started.elapsed().as_secs()));
            let slice = remaining.min(Duration::from_secs(5));
            tokio::select! {
                r = self.engine.wait_for_change(&action.id, None, slice) => {
                    if let Ok(view) = r {
                        current = view.action;
                    }
                }
                _ = call.cancel.cancelled() => break,
            }
        }
        current
    }
}

fn content_text(content: &[ContentBlock]) -> String {
    let text: Vec<String> = content
        .iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .filter_map(|v| v.get("text").and_then(Value::as_str).map(str::to_string))
        .collect();
    if text.is_empty() { "the tool reported an error".into() } else { text.join("\n") }
}

/// `_meta` key an upstream may set on a `tools/call` result to say what the call cost, in US
/// dollars.
pub const COST_META: &str = "airlock/cost_usd";

/// The cost an upstream reported in the result's `_meta`; a value that is not a non-negative
/// number is ignored (and logged), as the call has happened either way.
fn reported_cost(tool: &str, output: &Value) -> Option<f64> {
    let value = output.get("_meta")?.get(COST_META)?;
    match value.as_f64().map(airlock_core::money::Usd::new) {
        Some(Ok(cost)) => Some(cost.get()),
        _ => {
            tracing::warn!(tool, value = %value, "ignoring `_meta.{COST_META}` that is not a non-negative number");
            None
        }
    }
}

fn upstream_error_text(tool: &str, e: &UpstreamError, killed: Option<&Reason>) -> String {
    let mut text = format!("airlock could not complete `{tool}`: {e}");
    if let Some(reason) = killed {
        text.push_str(&format!(" ({})", reason.msg));
    }
    if e.outcome_unknown() {
        text.push_str("; the upstream may have acted on it, so its outcome is unknown: check before retrying");
    }
    text
}

/// The result of an action that has already finished, for retries and joins.
fn recorded_result(action: &Action) -> CallToolResult {
    match (&action.status, &action.result) {
        (ActionStatus::Succeeded | ActionStatus::Failed, Some(r)) => {
            if let Ok(res) = serde_json::from_value::<CallToolResult>(r.output.clone()) {
                return res;
            }
            error_result(r.error.clone().unwrap_or_else(|| "the call failed".into()))
        }
        (ActionStatus::Unknown, result) => error_result(format!(
            "the outcome of action {} is unknown ({}); check the target system before retrying",
            action.id,
            result
                .as_ref()
                .and_then(|r| r.error.as_deref())
                .unwrap_or("airlock lost track of the call while it was out")
        )),
        (status, _) => error_result(format!("airlock: action {} is `{status}`: {}", action.id, reasons_text(action))),
    }
}

fn pending_text(action: &Action, approval: Option<&Approval>, waited: Duration) -> String {
    let mut text = format!(
        "airlock is holding `{}` for human approval (approval {}, action {}): {}.",
        action.tool,
        action.approval_id.as_deref().unwrap_or("?"),
        action.id,
        reasons_text(action)
    );
    if let Some(a) = approval {
        text.push_str(&format!(
            " It needs {}; {} so far. It expires at {}.",
            a.requirements.describe(),
            a.approvals(),
            a.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    text.push_str(&format!(
        " Waited {}s. Retry this exact call (same tool, same arguments) to keep waiting: it resumes the same approval and runs once, as soon as it is approved.",
        waited.as_secs()
    ));
    text
}

#[async_trait::async_trait]
impl Gateway for McpGateway {
    fn bind_mcp_session(&self, mcp_session: &str, agent_id: &str, session_id: &str) {
        // `/mcp` admitted this request only because `agent_id` opened `mcp_session`, and a
        // session with a request in progress does not expire, so the binding holds.
        if !self.mcp_sessions.bind(mcp_session, agent_id, session_id) {
            tracing::warn!(session = %session_id, "an airlock session was opened for an MCP session that is gone");
        }
    }

    fn upstreams(&self) -> &airlock_mcp::Upstreams {
        &self.upstreams
    }

    async fn screen_read(
        &self,
        caller: &CallerIdentity,
        session_id: &str,
        read: airlock_mcp::ReadRequest,
    ) -> Result<(), String> {
        let Some(agent) = self.agent_of(&caller.agent_id, caller.principal.as_ref()) else {
            return Err(format!("unknown agent `{}`", caller.agent_id));
        };
        let read = crate::engine::Read {
            kind: read.kind,
            upstream: read.upstream,
            target: read.target,
            server: caller.server.clone(),
            arguments: read.arguments,
        };
        match self.engine.screen_read(&agent, session_id, &read).await {
            Ok(verdict) => verdict,
            Err(e) => Err(format!("it could not be screened and journaled, so it was not served: {e}")),
        }
    }

    fn forwarded(&self, message: airlock_mcp::Forwarded) {
        use std::sync::atomic::Ordering;
        metrics::counter!(crate::telemetry::MCP_FORWARDED, "method" => message.method.clone(), "outcome" => message.outcome)
            .increment(1);
        if self.unjournaled.fetch_add(1, Ordering::SeqCst) >= FORWARDED_BACKLOG {
            self.unjournaled.fetch_sub(1, Ordering::SeqCst);
            metrics::counter!(crate::telemetry::MCP_FORWARDED_UNJOURNALED).increment(1);
            tracing::warn!(method = %message.method, upstream = %message.upstream, "journal backlog full; a forwarded message was not journaled");
            return;
        }
        let (engine, backlog) = (self.engine.clone(), self.unjournaled.clone());
        tokio::spawn(async move {
            if let Err(e) = engine.record_forwarded(&message).await {
                tracing::error!(error = %e, method = %message.method, "cannot journal a forwarded message");
            }
            backlog.fetch_sub(1, Ordering::SeqCst);
        });
    }

    fn admits(&self, caller: &CallerIdentity, name: &str) -> bool {
        let allowed =
            self.agent_of(&caller.agent_id, caller.principal.as_ref()).is_some_and(|agent| agent.allows_tool(name));
        allowed
            && match &caller.server {
                None => true,
                Some(server) => self.server(server).is_some_and(|s| s.selects(name)),
            }
    }

    fn prefixed(&self, caller: &CallerIdentity) -> bool {
        caller.server.as_deref().and_then(|s| self.server(s)).is_none_or(VirtualServer::prefixed)
    }

    fn tools_for(&self, caller: &CallerIdentity) -> Vec<Tool> {
        let Some(agent) = self.agent_of(&caller.agent_id, caller.principal.as_ref()) else { return Vec::new() };
        let allowed = |full: &str| agent.allows_tool(full);
        if let Some(server) = &caller.server {
            // Offered names, each shown to the agent when its allowlist covers the tool's full name.
            let Some((_, offer)) = self.offer(server) else { return Vec::new() };
            return offer
                .tools
                .iter()
                .filter(|t| offer.naming.offered.get(t.name.as_ref()).is_some_and(|full| allowed(full)))
                .cloned()
                .collect();
        }
        let mut out = Vec::new();
        // The tool airlock itself offers on `/mcp` (docs/plans.md).
        if allowed(airlock_core::plan::PLAN_TOOL) {
            out.push(plans::tool());
        }
        if allowed(airlock_core::plan::CLAIM_TOOL) {
            out.push(plans::claim_tool());
        }
        for (upstream, tool) in self.upstreams.tools() {
            let full = format!("{upstream}{TOOL_SEPARATOR}{}", tool.name);
            if allowed(&full) {
                out.push(self.shown(&full, &tool));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn requester(
        &self,
        caller: &CallerIdentity,
        claimed: Option<(&str, &str)>,
    ) -> Result<Option<String>, GatewayError> {
        let agent = self
            .agent_of(&caller.agent_id, caller.principal.as_ref())
            .ok_or_else(|| GatewayError::UnknownAgent { agent_id: caller.agent_id.clone() })?;
        let (human, source) = claimed.unzip();
        self.engine
            .requester(&agent, human, source.unwrap_or_default())
            .map_err(|e| GatewayError::Pipeline(Box::new(e)))
    }

    async fn open_session(
        &self,
        caller: &CallerIdentity,
        task: String,
        on_behalf_of: Option<String>,
    ) -> Result<String, GatewayError> {
        let agent = self
            .agent_of(&caller.agent_id, caller.principal.as_ref())
            .ok_or_else(|| GatewayError::UnknownAgent { agent_id: caller.agent_id.clone() })?;
        let session = self.engine.open_session(&agent, task, Default::default(), on_behalf_of).await;
        session.map(|s| s.id).map_err(|e| GatewayError::Pipeline(Box::new(e)))
    }

    async fn call(&self, call: ToolCall) -> CallToolResult {
        let Some(agent) = self.agent_of(&call.agent_id, call.principal.as_ref()) else {
            return error_result("airlock: unknown agent");
        };
        if call.server.is_none() && call.tool == airlock_core::plan::PLAN_TOOL && agent.allows_tool(&call.tool) {
            return plans::propose(&self.engine, &agent, &call).await;
        }
        if call.server.is_none() && call.tool == airlock_core::plan::CLAIM_TOOL && agent.allows_tool(&call.tool) {
            return plans::claim(&self.engine, &agent, &call).await;
        }
        // On a virtual server the name is the server's: the action is the tool it reaches.
        let tool = match &call.server {
            None => call.tool.clone(),
            Some(server) => match self.resolve(server, &call.tool) {
                Ok(full) => full,
                Err(text) => return error_result(text),
            },
        };
        let plan_lease = match call.plan_lease.clone().map(serde_json::from_value::<crate::engine::LeaseRef>) {
            None => None,
            Some(Ok(lease)) => Some(lease),
            Some(Err(e)) => {
                return error_result(format!(
                    "airlock: `_meta[\"{}\"]` must be {{\"plan_id\": \"pln_…\", \"step\": \"…\", \"token\": n}}: {e}",
                    airlock_mcp::front::PLAN_LEASE_META
                ));
            }
        };
        let request = ActionRequest {
            plan_lease,
            reported_annotations: self.reported_annotations(&tool),
            tool,
            arguments: Value::Object(call.arguments.clone()),
            justification: call.justification.clone(),
            idempotency_key: None,
            traceparent: call.traceparent.clone(),
            mcp_session: call.mcp_session.clone(),
            server: call.server.clone(),
        };
        let submission = match self.engine.submit(&agent, &call.session_id, request).await {
            Ok(s) => s,
            Err(crate::engine::Error::Invalid(msg)) => return error_result(format!("airlock: {msg}")),
            Err(e) => return error_result(format!("airlock could not decide this call, so it was not run: {e}")),
        };
        let run = || Run { cancel: call.cancel.clone(), back: call.back.clone() };
        let mut carried = match executor::carry_out(&self.engine, Some(self), submission, run()).await {
            Ok(c) => c,
            Err(e) => return error_result(format!("airlock could not run the call: {e}")),
        };
        let mut waited = None;
        if carried.view.action.status == ActionStatus::PendingApproval {
            let started = Instant::now();
            let current = self.wait_for_approval(&carried.view.action, self.approval_wait, &call).await;
            waited = Some(started.elapsed());
            let view = crate::engine::ActionView { action: current, approval: carried.view.approval.clone() };
            let resumed = crate::engine::Submission { view, outcome: crate::engine::Outcome::Joined };
            carried = match executor::carry_out(&self.engine, Some(self), resumed, run()).await {
                Ok(c) => c,
                Err(e) => return error_result(format!("airlock could not run the call: {e}")),
            };
        }
        self.answer(carried, waited).await
    }
}

impl McpGateway {
    /// The tool result an MCP client gets for a carried-out call.
    async fn answer(&self, carried: Carried, waited: Option<Duration>) -> CallToolResult {
        if let Some(returned) = carried.returned {
            return returned;
        }
        let current = carried.view.action;
        match current.status {
            ActionStatus::PendingApproval => {
                let approval = match &current.approval_id {
                    Some(id) => self.engine.approval(id).await.ok().map(|(a, _)| a),
                    None => None,
                };
                error_result(pending_text(&current, approval.as_ref(), waited.unwrap_or_default()))
            }
            ActionStatus::Denied
                if current.approval_id.is_some() && current.decision.effect != airlock_core::Effect::Deny =>
            {
                let who = match &current.approval_id {
                    Some(id) => self
                        .engine
                        .approval(id)
                        .await
                        .ok()
                        .and_then(|(a, _)| a.votes.into_iter().find(|v| v.verdict == airlock_core::Verdict::Deny))
                        .map(|v| format!(" by {} (\"{}\")", v.human, v.comment))
                        .unwrap_or_default(),
                    None => String::new(),
                };
                error_result(format!(
                    "airlock: a human denied `{}`{who} (action {}). Do not retry it unchanged.",
                    current.tool, current.id
                ))
            }
            ActionStatus::Denied => error_result(format!(
                "airlock denied `{}` (action {}, policy {}): {}. Retrying the same call will be denied again; change the request or ask a human.",
                current.tool,
                current.id,
                short_revision(&current.decision.policy_revision),
                reasons_text(&current)
            )),
            _ => recorded_result(&current),
        }
    }
}

/// Shared handle.
pub type SharedGateway = Arc<McpGateway>;

/// One request on an MCP session, in progress: the session is not idle until it drops (when the
/// response has been sent, or the client went away).
pub struct McpRequest {
    gateway: Arc<McpGateway>,
    mcp_session: String,
}

impl std::fmt::Debug for McpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpRequest").finish_non_exhaustive()
    }
}

impl Drop for McpRequest {
    fn drop(&mut self) {
        self.gateway.mcp_sessions.finish(&self.mcp_session, self.gateway.engine.now());
    }
}

//! airlock as an MCP server: the endpoint agents connect to.
//!
//! One [`Front`] is created per MCP session. It advertises tools, and prompts, resources (with
//! subscriptions), logging and completions when a connected upstream supports them (merged from
//! every upstream, see [`crate::aggregate`]; on a virtual server, from the part it offers, under
//! its names), and protocol versions up to `2025-11-25` (the ones that use `initialize`; see
//! docs/adr/0008-mcp-gateway.md): a proxy must not advertise what it can't serve. Every
//! `tools/call` goes to the [`Gateway`]; progress notifications from the upstream are relayed
//! to the caller, a cancelled request is cancelled upstream, and what the upstream asks of the
//! caller during the call (sampling, elicitation, roots) or tells it (log messages) is forwarded
//! ([`crate::forward`]). Each session has a watcher ([`crate::list_changes`]) that sends it
//! `list_changed` notifications and ends its subscriptions when it goes.
// rmcp marks logging, sampling, elicitation, roots and subscriptions deprecated (SEP-2577, for
// protocol 2026-07-28); they are current in every version airlock serves (up to 2025-11-25).
#![allow(deprecated)]

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult, ContentBlock,
    GetPromptRequestParams, GetPromptResponse, Implementation, InitializeRequestParams, InitializeResult, JsonObject,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, SetLevelRequestParams, SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext};

use crate::forward::{Backchannel, Caller, Forwarded, LogLevel};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use tokio_util::sync::CancellationToken;

/// Who is calling, and on which endpoint: put into the HTTP request's extensions by the
/// server's authentication layer.
#[derive(Debug, Clone)]
pub struct CallerIdentity {
    /// The authenticated agent.
    pub agent_id: String,
    /// The virtual server the request came to (`/mcp/{server}`); `None` on `/mcp`, which
    /// offers every upstream under prefixed names. An MCP session stays on the endpoint that
    /// opened it.
    pub server: Option<String>,
    /// The agent as the server's authentication made it for this request (an access token's
    /// agent differs from token to token: its scopes, its template, its identity), for the
    /// gateway to read back; opaque here. `None`: the gateway looks the agent up by id.
    pub principal: Option<Principal>,
}

/// What the server's authentication put into a request about its caller, opaque to this crate.
pub type Principal = Arc<dyn std::any::Any + Send + Sync>;

/// Separator between an upstream's name and the name of its tool, prompt or resource.
pub const TOOL_SEPARATOR: &str = "__";

/// Header a client may send to name the session's task.
pub const TASK_HEADER: &str = "x-airlock-task";
/// `_meta` key a client may set on `tools/call` to give the call's justification.
pub const JUSTIFICATION_META: &str = "airlock/justification";
/// `_meta` key a client may set on `tools/call` to run it under the lease of a plan step
/// handed to its agent: `{"plan_id": "pln_…", "step": "…", "token": 3}`.
pub const PLAN_LEASE_META: &str = "airlock/plan_lease";
/// Header a client may send on `initialize` to name the human its session acts for (the
/// requester, who can't approve the session's actions).
pub const ON_BEHALF_OF_HEADER: &str = "airlock-on-behalf-of";
/// `_meta` key a client may set on `initialize` to name the human its session acts for.
pub const ON_BEHALF_OF_META: &str = "airlock/on_behalf_of";

/// Sends a progress message to the caller while a call waits (for example for approval).
pub type Progress = Arc<dyn Fn(String) + Send + Sync>;

/// One `tools/call` as the gateway receives it.
#[derive(Clone)]
pub struct ToolCall {
    /// The agent.
    pub agent_id: String,
    /// The airlock session of this MCP session.
    pub session_id: String,
    /// Tool name as the agent sees it: `{upstream}__{tool}` on `/mcp`, the server's name for
    /// it on a virtual server.
    pub tool: String,
    /// The virtual server the call came to, if any.
    pub server: Option<String>,
    /// Arguments.
    pub arguments: JsonObject,
    /// Why, from `_meta["airlock/justification"]`.
    pub justification: String,
    /// Cancelled when the client cancels the request or goes away.
    pub cancel: CancellationToken,
    /// Progress reporting, a no-op when the client sent no progress token.
    pub progress: Progress,
    /// What goes back to the caller while the upstream runs the call: its progress, and its
    /// requests and log messages.
    pub back: Backchannel,
    /// W3C `traceparent` from `params._meta`.
    pub traceparent: Option<String>,
    /// `_meta["airlock/plan_lease"]`, as sent (the gateway checks its shape).
    pub plan_lease: Option<serde_json::Value>,
    /// The MCP session id (`Mcp-Session-Id`).
    pub mcp_session: Option<String>,
    /// The caller as authentication made it for this request ([`CallerIdentity::principal`]).
    pub principal: Option<Principal>,
}

/// Why the gateway could not open the airlock session behind an MCP session.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The authenticated agent is not one the gateway knows.
    #[error("unknown agent `{agent_id}`")]
    UnknownAgent {
        /// The agent's id.
        agent_id: String,
    },
    /// The pipeline refused to open the session, or could not record it.
    #[error(transparent)]
    Pipeline(Box<dyn std::error::Error + Send + Sync>),
}

/// What the front needs from airlock's pipeline.
#[async_trait::async_trait]
pub trait Gateway: Send + Sync + 'static {
    /// The tools the caller may see on its endpoint, under the names it offers them (prefixed on
    /// `/mcp`), with local overrides applied.
    fn tools_for(&self, caller: &CallerIdentity) -> Vec<Tool>;
    /// The upstreams, for prompts, resources and completions.
    fn upstreams(&self) -> &crate::Upstreams;
    /// Whether the caller may see, on its endpoint, the prompt, resource or template with the
    /// prefixed name `{upstream}__{name}` (the agent's allowlist, and a virtual server's choice).
    fn admits(&self, caller: &CallerIdentity, name: &str) -> bool;
    /// Whether the caller's endpoint shows names with their `{upstream}__` prefix.
    fn prefixed(&self, _caller: &CallerIdentity) -> bool {
        true
    }
    /// The human an MCP session of the caller acts for, given what its `initialize` claimed
    /// (`claimed` names the human and where the claim was made). Refuses a claim it can't accept:
    /// the `initialize` then fails.
    fn requester(&self, caller: &CallerIdentity, claimed: Option<(&str, &str)>)
    -> Result<Option<String>, GatewayError>;
    /// Opens the airlock session backing one MCP session of the caller, acting for `on_behalf_of`; returns its
    /// id.
    async fn open_session(
        &self,
        caller: &CallerIdentity,
        task: String,
        on_behalf_of: Option<String>,
    ) -> Result<String, GatewayError>;
    /// Tells the gateway which airlock session an MCP session (`Mcp-Session-Id`) is backed by,
    /// so it can close it when the client ends the MCP session.
    fn bind_mcp_session(&self, _mcp_session: &str, _agent_id: &str, _session_id: &str) {}
    /// Runs one call through the pipeline. Denials, pending approvals and upstream failures are
    /// tool results with `isError: true`, so the model can read why.
    async fn call(&self, call: ToolCall) -> CallToolResult;
    /// Records a message that crossed between an upstream and a client (or was refused).
    fn forwarded(&self, _message: Forwarded) {}
    /// Screens a read that is not a tool call (a resource, a prompt, a completion, a
    /// subscription) before it reaches its upstream: `Err(why)` refuses it.
    async fn screen_read(&self, _caller: &CallerIdentity, _session_id: &str, _read: ReadRequest) -> Result<(), String> {
        Ok(())
    }
}

/// A read that is not a tool call, as the gateway screens it.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// `resource.read`, `resource.subscribe`, `prompt.get` or `completion.complete`.
    pub kind: &'static str,
    /// The upstream that serves it.
    pub upstream: String,
    /// The resource URI; the prompt's `{upstream}__{name}`; for a completion, the prompt's
    /// `{upstream}__{name}` or the template's URI.
    pub target: String,
    /// The prompt's or completion's arguments.
    pub arguments: serde_json::Value,
}

/// The MCP server handler of one session.
#[derive(Clone)]
pub struct Front {
    gateway: Arc<dyn Gateway>,
    session: Arc<tokio::sync::OnceCell<String>>,
    /// The human the session acts for, settled at `initialize`.
    requester: Arc<std::sync::OnceLock<Option<String>>>,
    /// Tells this MCP session's subscriptions from others'.
    id: u64,
    /// The log level the client asked for.
    level: LogLevel,
}

impl Front {
    /// A handler for a new MCP session.
    pub fn new(gateway: Arc<dyn Gateway>) -> Front {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Front {
            gateway,
            session: Arc::new(tokio::sync::OnceCell::new()),
            requester: Arc::new(std::sync::OnceLock::new()),
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            level: LogLevel::default(),
        }
    }
}

/// Who an `initialize` says its session acts for: `(human, where it said so)`. The header and
/// the `_meta` key may both be given, and must then agree; a header sent twice, a value that is
/// not text, or an empty one is refused rather than guessed at.
fn requester_claim(
    request: &InitializeRequestParams,
    ctx: &RequestContext<RoleServer>,
) -> Result<Option<(String, &'static str)>, ErrorData> {
    const HEADER: &str = "the `Airlock-On-Behalf-Of` header";
    const META: &str = "`_meta[\"airlock/on_behalf_of\"]`";
    let refuse = |msg: String| Err(ErrorData::invalid_params(msg, None));
    let mut header = None;
    if let Some(parts) = ctx.extensions.get::<http::request::Parts>() {
        let mut values = parts.headers.get_all(ON_BEHALF_OF_HEADER).iter();
        if let Some(value) = values.next() {
            if values.next().is_some() {
                return refuse(format!("{HEADER} is sent more than once; send it once, naming one human"));
            }
            match value.to_str() {
                Ok(v) => header = Some(v.trim().to_string()),
                Err(_) => return refuse(format!("{HEADER} is not text; it must be a human's id")),
            }
        }
    }
    let meta = match request
        .meta
        .as_ref()
        .and_then(|m| m.0.get(ON_BEHALF_OF_META))
        .or_else(|| ctx.meta.0.get(ON_BEHALF_OF_META))
    {
        None => None,
        Some(serde_json::Value::String(v)) => Some(v.trim().to_string()),
        Some(other) => return refuse(format!("{META} must be a human's id (a string), not `{other}`")),
    };
    let claim = match (header, meta) {
        (Some(h), Some(m)) if h != m => {
            return refuse(format!("{HEADER} names `{h}` and {META} names `{m}`; name one human"));
        }
        (Some(h), _) => Some((h, HEADER)),
        (None, Some(m)) => Some((m, META)),
        (None, None) => None,
    };
    match claim {
        Some((human, source)) if human.is_empty() => refuse(format!("{source} is empty; it must be a human's id")),
        claim => Ok(claim),
    }
}

fn identity(ctx: &RequestContext<RoleServer>) -> Result<CallerIdentity, ErrorData> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<CallerIdentity>())
        .cloned()
        .ok_or_else(|| ErrorData::invalid_request("no authenticated agent on this request", None))
}

fn header(ctx: &RequestContext<RoleServer>, name: &str) -> Option<String> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.headers.get(name))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Protocol versions the front accepts: every version that still uses `initialize`.
pub fn supported_versions() -> &'static [ProtocolVersion] {
    ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25)
}

/// What one caller may see of prompts, resources and templates on its endpoint.
struct Visible<F> {
    admits: F,
    prefixed: bool,
}

impl<F: Fn(&str) -> bool + Send + Sync> Visible<F> {
    fn names(&self) -> crate::aggregate::Names<'_> {
        crate::aggregate::Names { admits: &self.admits, prefixed: self.prefixed }
    }
}

impl Front {
    /// What the caller may see on its endpoint (by prefixed name), and how names are shown there.
    fn visible(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<Visible<impl Fn(&str) -> bool + Send + Sync + '_>, ErrorData> {
        let caller = identity(context)?;
        let prefixed = self.gateway.prefixed(&caller);
        Ok(Visible { admits: move |name: &str| self.gateway.admits(&caller, name), prefixed })
    }

    /// The airlock session behind this MCP session, opened by its first call or subscription.
    async fn session(&self, who: &CallerIdentity, context: &RequestContext<RoleServer>) -> Result<String, ErrorData> {
        let task = header(context, TASK_HEADER).unwrap_or_else(|| {
            context
                .peer
                .peer_info()
                .map(|i| format!("MCP session of {} {}", i.client_info.name, i.client_info.version))
                .unwrap_or_else(|| "MCP session".into())
        });
        let gateway = self.gateway.clone();
        let caller = who.clone();
        let bind = header(context, "mcp-session-id");
        // Set at `initialize`; the gateway applies the agent's configured requester either way.
        let requester = self.requester.get().cloned().flatten();
        let session = self
            .session
            .get_or_try_init(|| async move {
                let session = gateway.open_session(&caller, task, requester).await?;
                if let Some(m) = &bind {
                    gateway.bind_mcp_session(m, &caller.agent_id, &session);
                }
                Ok::<String, GatewayError>(session)
            })
            .await
            .map_err(|e| ErrorData::internal_error(format!("cannot open an airlock session: {e}"), None))?;
        Ok(session.clone())
    }

    /// Screens a read with the gateway (opening the session if needed); a refusal is an
    /// `invalid_request` error that says why.
    async fn screen(&self, context: &RequestContext<RoleServer>, read: ReadRequest) -> Result<(), ErrorData> {
        let who = identity(context)?;
        let session = self.session(&who, context).await?;
        let kind = read.kind;
        self.gateway
            .screen_read(&who, &session, read)
            .await
            .map_err(|why| ErrorData::invalid_request(format!("airlock refused this {kind}: {why}"), None))
    }

    /// This session as the client of an upstream's messages, for the request in `context`.
    fn caller(&self, who: &CallerIdentity, session_id: String, context: &RequestContext<RoleServer>) -> Caller {
        Caller {
            peer: context.peer.clone(),
            request: context.id.clone(),
            agent_id: who.agent_id.clone(),
            session_id,
            level: self.level.clone(),
            gateway: self.gateway.clone(),
            action: None,
        }
    }
}

impl ServerHandler for Front {
    /// Settles who the session acts for before answering: an `initialize` whose requester can't
    /// be accepted fails, so no session runs with a requester other than the one airlock knows.
    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        let who = identity(&context)?;
        let claim = requester_claim(&request, &context)?;
        let requester = self
            .gateway
            .requester(&who, claim.as_ref().map(|(human, source)| (human.as_str(), *source)))
            .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
        if self.requester.set(requester).is_err() {
            return Err(ErrorData::invalid_request("this MCP session is already initialized", None));
        }
        context.peer.set_peer_info(request.clone());
        crate::list_changes::watch(self.gateway.clone(), who.clone(), context.peer.clone(), self.id);
        let mut result = self.negotiate_initialize(&request)?;
        if let Some(server) = &who.server {
            result.server_info.title = Some(format!("airlock gateway: {server}"));
        }
        Ok(result)
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(advertised(self.gateway.upstreams().offered()))
            .with_server_info(Implementation::new("airlock", env!("CARGO_PKG_VERSION")).with_title("airlock gateway"))
            .with_instructions(
                "Every tool call passes airlock's policy. A call may be denied (the result says why) or held \
                 for human approval (retry the same call to keep waiting; it runs once approved).",
            )
            .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(supported_versions())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let who = identity(&context)?;
        Ok(ListToolsResult::with_all_items(self.gateway.tools_for(&who)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let who = identity(&context)?;
        let mcp_session = header(&context, "mcp-session-id");
        let session = self.session(&who, &context).await?;
        let caller = self.caller(&who, session.clone(), &context);

        // rmcp may hand `params._meta` to the handler in the request or in the context.
        let meta_str = |key: &str| -> Option<String> {
            request
                .meta
                .as_ref()
                .and_then(|m| m.0.get(key))
                .or_else(|| context.meta.0.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let justification = meta_str(JUSTIFICATION_META).unwrap_or_default();
        let traceparent = meta_str("traceparent");
        let plan_lease = request
            .meta
            .as_ref()
            .and_then(|m| m.0.get(PLAN_LEASE_META))
            .or_else(|| context.meta.0.get(PLAN_LEASE_META))
            .cloned();
        let token =
            request.meta.as_ref().and_then(|m| m.get_progress_token()).or_else(|| context.meta.get_progress_token());
        // One task sends this call's progress notifications, in the order they were made, and is
        // drained before the result goes out: a notification sent after the response would have
        // no request stream left to travel on.
        let mut sender = None;
        let (progress, relay): (Progress, Option<crate::upstream::ProgressRelay>) = match token {
            Some(token) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ProgressNotificationParam>();
                let peer = context.peer.clone();
                sender = Some(tokio::spawn(async move {
                    while let Some(param) = rx.recv().await {
                        let _ = peer.notify_progress(param).await;
                    }
                }));
                let step = Arc::new(AtomicU64::new(0));
                let (waiting_tx, waiting_token, waiting_step) = (tx.clone(), token.clone(), step.clone());
                let progress: Progress = Arc::new(move |message: String| {
                    let n = waiting_step.fetch_add(1, Ordering::SeqCst) + 1;
                    let param = ProgressNotificationParam::new(waiting_token.clone(), n as f64).with_message(message);
                    let _ = waiting_tx.send(param);
                });
                // The upstream counts from its own zero; progress must keep increasing for the
                // client, so its values are shifted past the waiting messages already sent, and
                // one that arrives after a later one (rmcp hands each to its own task) is dropped.
                let last = std::sync::Mutex::new(f64::NEG_INFINITY);
                let relay: crate::upstream::ProgressRelay =
                    Arc::new(move |value: f64, total: Option<f64>, message: Option<String>| {
                        let base = step.load(Ordering::SeqCst) as f64;
                        {
                            let mut last = airlock_core::sync::lock(&last);
                            if base + value <= *last {
                                return;
                            }
                            *last = base + value;
                        }
                        let mut param = ProgressNotificationParam::new(token.clone(), base + value);
                        param.total = total.map(|t| base + t);
                        param.message = message;
                        let _ = tx.send(param);
                    });
                (progress, Some(relay))
            }
            None => (Arc::new(|_| {}), None),
        };
        let call = ToolCall {
            agent_id: who.agent_id,
            session_id: session,
            tool: request.name.to_string(),
            server: who.server,
            arguments: request.arguments.unwrap_or_default(),
            justification,
            cancel: context.ct.clone(),
            progress,
            back: Backchannel { progress: relay, caller: Some(caller) },
            traceparent,
            plan_lease,
            mcp_session,
            principal: who.principal,
        };
        let result = self.gateway.call(call).await;
        // The call and its progress closures are gone, so the channel closes once drained.
        if let Some(sender) = sender {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sender).await;
        }
        Ok(result.into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let visible = self.visible(&context)?;
        Ok(ListPromptsResult::with_all_items(
            crate::aggregate::prompts(self.gateway.upstreams(), visible.names()).await,
        ))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let visible = self.visible(&context)?;
        let upstreams = self.gateway.upstreams();
        let arguments = serde_json::to_value(&request.arguments).unwrap_or_default();
        let (upstream, request) = crate::aggregate::prompt_target(upstreams, visible.names(), request).await?;
        let target = format!("{upstream}{TOOL_SEPARATOR}{}", request.name);
        self.screen(&context, ReadRequest { kind: "prompt.get", upstream: upstream.clone(), target, arguments })
            .await?;
        crate::aggregate::get_prompt(upstreams, &upstream, request).await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let visible = self.visible(&context)?;
        Ok(ListResourcesResult::with_all_items(
            crate::aggregate::resources(self.gateway.upstreams(), visible.names()).await,
        ))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let visible = self.visible(&context)?;
        Ok(ListResourceTemplatesResult::with_all_items(
            crate::aggregate::resource_templates(self.gateway.upstreams(), visible.names()).await,
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let visible = self.visible(&context)?;
        let upstreams = self.gateway.upstreams();
        let upstream = crate::aggregate::resource_target(upstreams, visible.names(), &request.uri).await?;
        let read = ReadRequest {
            kind: "resource.read",
            upstream: upstream.clone(),
            target: request.uri.clone(),
            arguments: serde_json::Value::Null,
        };
        self.screen(&context, read).await?;
        crate::aggregate::read_resource(upstreams, &upstream, request).await
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let visible = self.visible(&context)?;
        let upstreams = self.gateway.upstreams();
        let Some((upstream, request)) = crate::aggregate::completion_target(upstreams, visible.names(), request).await
        else {
            // Nothing to complete from: an empty answer, as the protocol expects for unknown refs.
            return Ok(CompleteResult::default());
        };
        let target = match &request.r#ref {
            rmcp::model::Reference::Prompt(p) => format!("{upstream}{TOOL_SEPARATOR}{}", p.name),
            rmcp::model::Reference::Resource(r) => r.uri.clone(),
            _ => String::new(),
        };
        let arguments = serde_json::to_value(&request.argument).unwrap_or_default();
        self.screen(
            &context,
            ReadRequest { kind: "completion.complete", upstream: upstream.clone(), target, arguments },
        )
        .await?;
        crate::aggregate::complete(upstreams, &upstream, request).await
    }

    /// Keeps the level for this session's messages, and asks the upstreams that log for it.
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let who = identity(&context)?;
        let session = self.session(&who, &context).await?;
        self.level.set(request.level);
        self.gateway.upstreams().set_level(request.level).await;
        let level = serde_json::to_value(request.level).unwrap_or_default();
        self.caller(&who, session, &context).record(
            "logging/setLevel",
            "*",
            "delivered",
            None,
            serde_json::json!({"level": level}),
        );
        Ok(())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let visible = self.visible(&context)?;
        let who = identity(&context)?;
        let upstream =
            crate::aggregate::resource_target(self.gateway.upstreams(), visible.names(), &request.uri).await?;
        let read = ReadRequest {
            kind: "resource.subscribe",
            upstream: upstream.clone(),
            target: request.uri.clone(),
            arguments: serde_json::Value::Null,
        };
        self.screen(&context, read).await?;
        let session = self.session(&who, &context).await?;
        let caller = self.caller(&who, session, &context);
        let subscribed =
            self.gateway.upstreams().subscribe_resource(&upstream, &request.uri, self.id, caller.clone()).await;
        let content = serde_json::json!({"uri": request.uri});
        match subscribed {
            Ok(()) => {
                caller.record("resources/subscribe", &upstream, "delivered", None, content);
                Ok(())
            }
            Err(e) => {
                caller.record("resources/subscribe", &upstream, "failed", Some(e.to_string()), content);
                Err(ErrorData::invalid_params(e.to_string(), None))
            }
        }
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let who = identity(&context)?;
        if self.gateway.upstreams().unsubscribe_resource(&request.uri, self.id).await {
            let session = self.session(&who, &context).await?;
            let content = serde_json::json!({"uri": request.uri});
            self.caller(&who, session, &context).record("resources/unsubscribe", "*", "delivered", None, content);
        }
        Ok(())
    }

    async fn on_roots_list_changed(&self, _context: NotificationContext<RoleServer>) {
        self.gateway.upstreams().roots_changed().await;
    }
}

/// What airlock advertises: tools always (its own pipeline serves them), the rest when a
/// connected upstream supports it.
fn advertised(offered: crate::Offered) -> ServerCapabilities {
    let mut caps = ServerCapabilities::builder().enable_tools().enable_tool_list_changed().build();
    let listed = || serde_json::from_value(serde_json::json!({"listChanged": true})).ok();
    if offered.prompts {
        caps.prompts = listed();
    }
    if offered.resources {
        caps.resources =
            serde_json::from_value(serde_json::json!({"listChanged": true, "subscribe": offered.subscribe})).ok();
    }
    if offered.logging {
        caps.logging = Some(JsonObject::new());
    }
    if offered.completions {
        caps.completions = Some(JsonObject::new());
    }
    caps
}

/// A tool result with `isError: true` and one text block.
pub fn error_result(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_errors_show_the_pipelines_own_message() {
        let unknown = GatewayError::UnknownAgent { agent_id: "ghost".into() };
        assert_eq!(unknown.to_string(), "unknown agent `ghost`");
        let journal = std::io::Error::other("journal unavailable: disk full");
        assert_eq!(GatewayError::Pipeline(Box::new(journal)).to_string(), "journal unavailable: disk full");
    }
}

//! airlock's client handler for one upstream: what airlock does with the requests and
//! notifications an upstream sends it (see [`crate::forward`] for who gets them).
// rmcp marks logging, sampling, elicitation, roots and subscriptions deprecated (SEP-2577, for
// protocol 2026-07-28); they are current in every version airlock serves (up to 2025-11-25).
#![allow(deprecated)]

use rmcp::model::{
    ClientCapabilities, ClientConfig, ClientResult, CreateMessageRequest, CreateMessageRequestParams,
    CreateMessageResult, ElicitRequest, ElicitRequestParams, ElicitResult, Implementation, ListRootsRequest,
    ListRootsResult, LoggingMessageNotificationParam, NumberOrString, ProgressNotificationParam, ProgressToken,
    ProtocolVersion, ResourceUpdatedNotificationParam, ServerRequest,
};
use rmcp::service::{InboundStreamOrigin, NotificationContext, RequestContext};
use rmcp::{ClientHandler, ErrorData, RoleClient};
use std::sync::Arc;

use super::Upstream;
use crate::forward::Caller;
use airlock_core::sync::lock;

/// airlock's client handler for one upstream. It advertises sampling, elicitation (form and
/// URL) and roots, and forwards each such request to the client whose call caused it (an
/// error goes back when that client did not advertise the capability); it forwards log messages
/// and resource updates, and reacts to list changes (tools are re-read; prompts and resources
/// changes are counted for the sessions to forward).
#[derive(Clone)]
pub(super) struct UpstreamClient {
    pub(super) upstream: Arc<Upstream>,
}

/// What airlock offers upstreams as a client: whatever a client of its own may offer; each
/// request is checked against the capabilities of the client it is for.
fn capabilities() -> ClientCapabilities {
    let offered = serde_json::json!({
        "roots": {"listChanged": true},
        "sampling": {"tools": {}, "context": {}},
        "elicitation": {"form": {}, "url": {}},
    });
    serde_json::from_value(offered).unwrap_or_default()
}

/// Which client capability a forwarded request needs, and whether `caller` advertised it.
fn advertised(caller: &Caller, request: &ServerRequest) -> Result<(), ErrorData> {
    let Some(info) = caller.peer.peer_info() else {
        return Err(ErrorData::invalid_request("the client of this call has not initialized", None));
    };
    let caps = &info.capabilities;
    let (ok, what) = match request {
        ServerRequest::CreateMessageRequest(r) => {
            let tools = r.params.tools.is_some() || r.params.tool_choice.is_some();
            match &caps.sampling {
                Some(s) if tools && s.tools.is_none() => (false, "sampling with tools"),
                Some(_) => (true, ""),
                None => (false, "sampling"),
            }
        }
        ServerRequest::ListRootsRequest(_) => (caps.roots.is_some(), "roots"),
        ServerRequest::ElicitRequest(r) => match (&r.params, &caps.elicitation) {
            (_, None) => (false, "elicitation"),
            (ElicitRequestParams::UrlElicitationParams { .. }, Some(e)) => (e.url.is_some(), "URL-mode elicitation"),
            // An empty `elicitation` capability means form mode (the protocol's default).
            (_, Some(e)) => (e.form.is_some() || e.url.is_none(), "form-mode elicitation"),
        },
        _ => (true, ""),
    };
    if ok {
        Ok(())
    } else {
        Err(ErrorData::invalid_request(format!("the client of this call did not advertise {what}"), None))
    }
}

impl UpstreamClient {
    /// Forwards a request from the upstream to the client it is for, and journals it.
    async fn forward(
        &self,
        request: ServerRequest,
        context: &RequestContext<RoleClient>,
    ) -> Result<ClientResult, ErrorData> {
        let method = match &request {
            ServerRequest::CreateMessageRequest(_) => "sampling/createMessage",
            ServerRequest::ElicitRequest(_) => "elicitation/create",
            ServerRequest::ListRootsRequest(_) => "roots/list",
            _ => "request",
        };
        let upstream = self.upstream.spec.name.clone();
        let params = serde_json::to_value(&request).ok().and_then(|v| v.get("params").cloned());
        let origin = context.extensions.get::<InboundStreamOrigin>();
        let mut routed = self.upstream.in_flight.route(origin);
        // The call is registered just after it is sent; an upstream that asks at once may be
        // quicker than that.
        for _ in 0..8 {
            if routed.is_ok() {
                break;
            }
            tokio::task::yield_now().await;
            routed = self.upstream.in_flight.route(origin);
        }
        let caller = match routed {
            Ok(caller) => caller,
            Err(reason) => {
                tracing::warn!(%upstream, %method, reason, "an upstream's request was refused");
                return Err(ErrorData::invalid_request(format!("airlock: {reason}"), None));
            }
        };
        if let Err(e) = advertised(&caller, &request) {
            caller.record(
                method,
                &upstream,
                "refused",
                Some(e.message.to_string()),
                serde_json::json!({"params": params}),
            );
            return Err(e);
        }
        let answer = tokio::select! {
            answer = caller.ask(request, self.upstream.spec.call_timeout) => answer,
            _ = context.ct.cancelled() => Err(ErrorData::internal_error("cancelled by the upstream", None)),
        };
        match &answer {
            Ok(result) => caller.record(
                method,
                &upstream,
                "delivered",
                None,
                serde_json::json!({"params": params, "result": result}),
            ),
            Err(e) => caller.record(
                method,
                &upstream,
                "failed",
                Some(e.message.to_string()),
                serde_json::json!({"params": params}),
            ),
        }
        answer
    }
}

/// The answer of the kind `want` picks, or an error naming what came instead.
fn expect<T>(answer: ClientResult, want: fn(ClientResult) -> Option<T>) -> Result<T, ErrorData> {
    want(answer).ok_or_else(|| ErrorData::internal_error("the client answered with the wrong kind of result", None))
}

impl ClientHandler for UpstreamClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(capabilities(), Implementation::new("airlock", env!("CARGO_PKG_VERSION")))
            // rmcp offers `2026-07-28` by default, which servers that use `initialize` reject.
            .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let request = ServerRequest::CreateMessageRequest(CreateMessageRequest::new(params));
        let answer = self.forward(request, &context).await?;
        expect(answer, |a| match a {
            ClientResult::CreateMessageResult(r) => Some(*r),
            _ => None,
        })
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
        let answer = self.forward(request, &context).await?;
        expect(answer, |a| match a {
            ClientResult::ElicitResult(r) => Some(r),
            _ => None,
        })
    }

    async fn list_roots(&self, context: RequestContext<RoleClient>) -> Result<ListRootsResult, ErrorData> {
        let request = ServerRequest::ListRootsRequest(ListRootsRequest::default());
        let answer = self.forward(request, &context).await?;
        expect(answer, |a| match a {
            ClientResult::ListRootsResult(r) => Some(r),
            _ => None,
        })
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let upstream = &self.upstream.spec.name;
        let Ok(caller) = self.upstream.in_flight.route(None) else {
            tracing::debug!(%upstream, level = ?params.level, "an upstream's log message has no session to go to");
            return;
        };
        if !caller.level.wants(params.level) {
            return;
        }
        let content = serde_json::to_value(&params).unwrap_or_default();
        let (outcome, reason) = match caller.peer.notify_logging_message(params).await {
            Ok(()) => ("delivered", None),
            Err(e) => ("failed", Some(e.to_string())),
        };
        caller.record("notifications/message", upstream, outcome, reason, content);
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.upstream.subscriptions.updated(&self.upstream.spec.name, params).await;
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.upstream.refresh_tools.store(true, std::sync::atomic::Ordering::SeqCst);
        self.upstream.poke.notify_one();
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.upstream.lists.send_modify(|n| n.prompts = n.prompts.wrapping_add(1));
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.upstream.lists.send_modify(|n| n.resources = n.resources.wrapping_add(1));
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        let key = token_key(&params.progress_token);
        let relay = lock(&self.upstream.progress).get(&key).cloned();
        if let Some(relay) = relay {
            relay(params.progress, params.total, params.message);
        }
    }
}

/// A progress token as a map key.
pub(crate) fn token_key(token: &ProgressToken) -> String {
    match &token.0 {
        NumberOrString::Number(n) => n.to_string(),
        NumberOrString::String(s) => s.to_string(),
    }
}

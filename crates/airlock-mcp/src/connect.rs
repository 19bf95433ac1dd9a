//! `airlock connect`: a stdio MCP server that forwards to airlock's `/mcp` endpoint, for
//! clients that can only launch stdio servers. Authentication and every decision happen at the
//! server; the bridge only carries messages: tools, prompts, resources and completions, progress
//! notifications of a call back to the client, and the client's cancellation of a call to airlock.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use airlock_core::sync::lock;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, ClientCapabilities, ClientConfig, ClientRequest,
    CompleteRequestParams, CompleteResult, GetPromptRequestParams, GetPromptResponse, Implementation,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ProgressToken, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig, ServerResult,
};
use rmcp::service::{NotificationContext, Peer, PeerRequestOptions, RequestContext};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt};

use crate::front::{ON_BEHALF_OF_HEADER, TASK_HEADER, supported_versions};
use crate::upstream::{AbandonGuard, token_key};

/// Why the bridge stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// airlock could not be reached or refused the handshake.
    #[error("cannot connect to airlock at {url}: {message}")]
    Connect {
        /// The endpoint.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The stdio side failed.
    #[error("stdio session failed: {0}")]
    Stdio(String),
}

/// Where a call's progress goes: the local client and the token it asked for.
type Relays = Arc<Mutex<HashMap<String, (Peer<RoleServer>, ProgressToken)>>>;

/// The bridge's client side, towards airlock: passes progress notifications on.
#[derive(Clone)]
struct Remote {
    info: ClientConfig,
    relays: Relays,
}

impl ClientHandler for Remote {
    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        let target = lock(&self.relays).get(&token_key(&params.progress_token)).cloned();
        if let Some((peer, token)) = target {
            let mut local = ProgressNotificationParam::new(token, params.progress);
            local.total = params.total;
            local.message = params.message;
            let _ = peer.notify_progress(local).await;
        }
    }
}

#[derive(Clone)]
struct Bridge {
    remote: Peer<RoleClient>,
    info: ServerConfig,
    relays: Relays,
}

fn remote_error(e: rmcp::ServiceError) -> ErrorData {
    match e {
        rmcp::ServiceError::McpError(err) => err,
        other => ErrorData::internal_error(format!("airlock is unreachable: {other}"), None),
    }
}

impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        self.info.clone()
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(supported_versions())
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.remote.list_tools(request).await.map_err(remote_error)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let local_token =
            request.meta.as_ref().and_then(|m| m.get_progress_token()).or_else(|| context.meta.get_progress_token());
        let handle = self
            .remote
            .send_request_with_option(
                ClientRequest::CallToolRequest(CallToolRequest::new(request)),
                PeerRequestOptions::no_options(),
            )
            .await
            .map_err(remote_error)?;
        let key = token_key(&handle.progress_token);
        if let Some(token) = local_token {
            lock(&self.relays).insert(key.clone(), (context.peer.clone(), token));
        }
        // A cancellation by the client is sent on to airlock.
        let mut abandoned =
            AbandonGuard { peer: self.remote.clone(), id: Some(handle.id.clone()), reason: "cancelled by the client" };
        let outcome = tokio::select! {
            r = handle.await_response() => Some(r),
            _ = context.ct.cancelled() => None,
        };
        lock(&self.relays).remove(&key);
        if outcome.is_some() {
            abandoned.id = None;
        }
        match outcome {
            None => Err(ErrorData::internal_error("the call was cancelled", None)),
            Some(Ok(ServerResult::CallToolResult(result))) => Ok(result.into()),
            Some(Ok(_)) => Err(ErrorData::internal_error("airlock answered tools/call with something else", None)),
            Some(Err(e)) => Err(remote_error(e)),
        }
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        self.remote.list_prompts(request).await.map_err(remote_error)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        self.remote.get_prompt_once(request).await.map_err(remote_error)
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.remote.list_resources(request).await.map_err(remote_error)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.remote.list_resource_templates(request).await.map_err(remote_error)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.remote.read_resource_once(request).await.map_err(remote_error)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        self.remote.complete(request).await.map_err(remote_error)
    }
}

/// Runs the bridge on this process's stdin/stdout until the client disconnects. `on_behalf_of`
/// names the human the session acts for (sent as `Airlock-On-Behalf-Of`).
pub async fn run_stdio_bridge(
    url: &str,
    token: &str,
    task: Option<String>,
    on_behalf_of: Option<String>,
) -> Result<(), Error> {
    crate::ensure_crypto_provider();
    let mut headers = HashMap::new();
    if let Some(task) = task
        && let Ok(value) = http::HeaderValue::try_from(task)
    {
        headers.insert(http::HeaderName::from_static(TASK_HEADER), value);
    }
    if let Some(human) = on_behalf_of {
        // A requester that can't be sent must not be dropped silently: airlock would then let
        // that human approve the session's actions.
        let value = http::HeaderValue::try_from(human.as_str()).map_err(|_| Error::Connect {
            url: url.to_string(),
            message: format!("`{human}` is not a valid header value"),
        })?;
        headers.insert(http::HeaderName::from_static(ON_BEHALF_OF_HEADER), value);
    }
    let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(token).custom_headers(headers);
    let client_info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("airlock-connect", env!("CARGO_PKG_VERSION")),
    )
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    let relays = Relays::default();
    let remote = Remote { info: client_info, relays: relays.clone() }
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .map_err(|e| Error::Connect { url: url.to_string(), message: e.to_string() })?;
    // The bridge offers what airlock offers, and nothing more.
    let capabilities = remote
        .peer()
        .peer_info()
        .map(|i| i.capabilities.clone())
        .unwrap_or_else(|| ServerCapabilities::builder().enable_tools().build());
    let mut info = ServerConfig::new(capabilities).with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    if let Some(peer_info) = remote.peer().peer_info() {
        if let Some(server) = &peer_info.server_info {
            info = info.with_server_info(server.clone());
        }
        if let Some(instructions) = &peer_info.instructions {
            info = info.with_instructions(instructions.clone());
        }
    }
    let bridge = Bridge { remote: remote.peer().clone(), info, relays };
    let local = bridge.serve(rmcp::transport::stdio()).await.map_err(|e| Error::Stdio(e.to_string()))?;
    let _ = local.waiting().await;
    let _ = remote.cancel().await;
    Ok(())
}

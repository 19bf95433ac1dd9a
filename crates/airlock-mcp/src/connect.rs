//! `airlock connect`: a stdio MCP server that forwards to airlock's `/mcp` endpoint, for
//! clients that can only launch stdio servers. Authentication and every decision happen at the
//! server; the bridge only carries messages.

use std::borrow::Cow;
use std::collections::HashMap;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientCapabilities, ClientConfig, Implementation, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
};
use rmcp::service::{Peer, RequestContext};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt};

use crate::front::{TASK_HEADER, supported_versions};

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

#[derive(Clone)]
struct Bridge {
    remote: Peer<RoleClient>,
    info: ServerConfig,
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
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.remote.call_tool(request).await.map(Into::into).map_err(remote_error)
    }
}

/// Runs the bridge on this process's stdin/stdout until the client disconnects.
pub async fn run_stdio_bridge(url: &str, token: &str, task: Option<String>) -> Result<(), Error> {
    crate::ensure_crypto_provider();
    let mut headers = HashMap::new();
    if let Some(task) = task
        && let Ok(value) = http::HeaderValue::try_from(task)
    {
        headers.insert(http::HeaderName::from_static(TASK_HEADER), value);
    }
    let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(token).custom_headers(headers);
    let client_info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("airlock-connect", env!("CARGO_PKG_VERSION")),
    )
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    let remote = client_info
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .map_err(|e| Error::Connect { url: url.to_string(), message: e.to_string() })?;
    let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    if let Some(peer_info) = remote.peer().peer_info() {
        if let Some(server) = &peer_info.server_info {
            info = info.with_server_info(server.clone());
        }
        if let Some(instructions) = &peer_info.instructions {
            info = info.with_instructions(instructions.clone());
        }
    }
    let bridge = Bridge { remote: remote.peer().clone(), info };
    let local = bridge.serve(rmcp::transport::stdio()).await.map_err(|e| Error::Stdio(e.to_string()))?;
    let _ = local.waiting().await;
    let _ = remote.cancel().await;
    Ok(())
}

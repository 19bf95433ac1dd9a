//! An MCP server for the [`crate::mcp`] target to reach through airlock: tools that echo their
//! arguments (one read-only, one destructive) and one resource. It runs in this process, over
//! streamable HTTP on a port of 127.0.0.1, so a fuzzing run leaves no process behind. A test
//! peer, not a part of airlock.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

use crate::server::runtime;

#[derive(Clone)]
struct EchoServer;

fn object_schema() -> Arc<Map<String, Value>> {
    let Value::Object(schema) = json!({"type": "object", "additionalProperties": true}) else { unreachable!() };
    Arc::new(schema)
}

impl ServerHandler for EchoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("echo", "Answers with its arguments.", object_schema())
                .with_annotations(ToolAnnotations::new().read_only(true)),
            Tool::new("apply", "Answers with its arguments; marked destructive.", object_schema())
                .with_annotations(ToolAnnotations::new().destructive(true)),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        Ok(CallToolResult::success(vec![ContentBlock::text(arguments.to_string())]).into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![Resource::new("fuzz://note", "note")]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        Ok(ReadResourceResult::new(vec![ResourceContents::text("a note", request.uri)]).into())
    }
}

/// Starts the echo server; its `/mcp` URL.
pub(crate) fn start() -> String {
    runtime().block_on(async {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port of 127.0.0.1 for the echo upstream");
        let addr = listener.local_addr().expect("the echo upstream's address");
        let service = StreamableHttpService::new(
            || Ok(EchoServer),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default(),
        );
        let app = axum::Router::new().nest_service("/mcp", service);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("the echo upstream stopped: {e}");
            }
        });
        format!("http://{addr}/mcp")
    })
}

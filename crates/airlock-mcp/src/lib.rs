//! MCP for airlock, via the official Rust SDK (`rmcp`): the front (airlock as an MCP server that
//! agents connect to), the upstream clients (airlock as an MCP client of the real tool servers),
//! and the stdio bridge behind `airlock connect`.
//!
//! This crate speaks the protocol and nothing else. It never decides: every `tools/call` that
//! arrives at the front is handed to a [`Gateway`], which the server implements with the
//! decision pipeline. Only this crate and `airlock-server` know JSON-RPC or wire types.

pub mod aggregate;
pub mod connect;
pub mod forward;
pub mod front;
mod list_changes;
mod subscriptions;
pub mod upstream;

pub use forward::{ActionRef, Backchannel, Caller, Forwarded, LogLevel};
pub use front::{CallerIdentity, Front, Gateway, GatewayError, ReadRequest, ToolCall, error_result};
pub use upstream::{
    Health, ListChanges, Offered, ProgressRelay, Transport, UpstreamError, UpstreamSpec, UpstreamStatus, Upstreams,
};

/// Installs the process-wide TLS crypto provider (ring) used by every HTTPS client, once.
/// Called before any HTTP client is built; harmless when a provider is already installed.
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

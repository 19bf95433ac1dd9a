//! airlock's client handler for one upstream: what airlock does with the requests and
//! notifications an upstream sends it.

use rmcp::ClientHandler;
use rmcp::RoleClient;
use rmcp::model::{
    ClientCapabilities, ClientConfig, Implementation, NumberOrString, ProgressNotificationParam, ProgressToken,
    ProtocolVersion,
};
use rmcp::service::NotificationContext;
use std::sync::Arc;

use super::Upstream;
use airlock_core::sync::lock;

/// airlock's client handler for one upstream: it advertises no client capabilities (so servers
/// never send sampling, elicitation or roots requests it could not forward) and reacts to
/// list changes (tools are re-read; prompts and resources changes are
/// counted for the sessions to forward).
#[derive(Clone)]
pub(super) struct UpstreamClient {
    pub(super) upstream: Arc<Upstream>,
}

impl ClientHandler for UpstreamClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("airlock", env!("CARGO_PKG_VERSION")))
            // rmcp offers `2026-07-28` by default, which servers that use `initialize` reject.
            .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
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

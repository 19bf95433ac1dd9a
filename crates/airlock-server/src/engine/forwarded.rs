//! The journal record of what crosses the MCP gateway besides calls and lists.

use super::*;

impl Engine {
    /// Journals one message forwarded between an upstream and a client (or refused), as
    /// `mcp.forwarded` on the client's session.
    pub async fn record_forwarded(&self, message: &airlock_mcp::Forwarded) -> Result<()> {
        let now = self.now();
        let mut commit = Commit::default();
        commit.event(
            &message.session_id,
            EventKind::McpForwarded,
            now,
            serde_json::to_value(message).unwrap_or(Value::Null),
        );
        self.commit(commit).await
    }
}

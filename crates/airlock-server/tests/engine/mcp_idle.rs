//! MCP sessions that go idle, on the engine's clock: the gateway forgets them and closes the
//! airlock sessions behind them (cancelling what waits for a human there), as a `DELETE /mcp`
//! would. A request in progress (a `tools/call` held for approval) is not idleness. `/mcp`
//! answers a request naming a forgotten session with `404`, as for any session its agent does not
//! hold (the real-binary session-binding attack test shows that answer).

use std::sync::Arc;

use airlock_mcp::{Gateway, Upstreams};
use airlock_server::gateway::McpGateway;

use super::{Expect, Step, start};

const CONFIG: &str = r#"
[server]
data_dir = "data"
[policy]
dir = "."
[mcp]
session_idle_seconds = 60
[guards]
actions_per_minute = 0
[[agents]]
id = "bot"
token = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
owner = "platform"
tier = "autonomous"
[[humans]]
id = "alice"
token = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
groups = ["sre"]
roles = ["approve"]
"#;

const POLICY: &str = r#"
package airlock
import rego.v1
require_approval contains {"rule": "SC1", "msg": "scaling needs an SRE"} if input.action.tool == "nodepool.scale"
"#;

#[tokio::test]
async fn an_idle_mcp_session_expires_and_its_airlock_session_closes() {
    let mut run = start("mcp idle", CONFIG, POLICY, &Default::default()).await;
    let gateway = Arc::new(McpGateway::new(run.engine.clone(), Upstreams::start(Vec::new())));
    gateway.mcp_session_opened("mcp-used", "bot", None);
    gateway.mcp_session_opened("mcp-unused", "bot", None);

    // A `tools/call` arrives on `mcp-used`, opens airlock session s1 and is held for approval.
    let call = gateway.begin_mcp_request("mcp-used", "bot", None).expect("bot opened mcp-used");
    let agent = run.agent(None);
    let session = run.session(Some("s1"), &agent).await;
    gateway.bind_mcp_session("mcp-used", "bot", &session);
    let held = Step {
        call: Some("nodepool.scale".into()),
        alias: Some("held".into()),
        expect: Expect { status: Some("pending_approval".into()), ..Default::default() },
        ..Default::default()
    };
    run.step(0, &held).await;

    // Two minutes pass while the call waits: the session that never made a call expires, the
    // one with a call in progress does not.
    run.clock.advance(chrono::Duration::seconds(120));
    assert_eq!(gateway.expire_idle_mcp_sessions().await, vec!["mcp-unused".to_string()]);
    assert!(gateway.begin_mcp_request("mcp-unused", "bot", None).is_none(), "an expired session is unknown");
    let s = run.engine.session(&session, None).await.unwrap();
    assert_eq!(serde_json::to_value(s.status).unwrap(), "active");

    // The call ends (the client gave up waiting); idleness counts from then.
    drop(call);
    run.clock.advance(chrono::Duration::seconds(59));
    assert!(gateway.expire_idle_mcp_sessions().await.is_empty(), "expired before its idle time");
    run.clock.advance(chrono::Duration::seconds(2));
    assert_eq!(gateway.expire_idle_mcp_sessions().await, vec!["mcp-used".to_string()]);

    let s = run.engine.session(&session, None).await.unwrap();
    assert_eq!(serde_json::to_value(s.status).unwrap(), "closed");
    let reason = s.status_reason.unwrap_or_default();
    assert!(reason.contains("idle for 60s"), "{reason}");
    let view = run.engine.action_view(&run.action("held"), None).await.unwrap();
    assert_eq!(view.action.status.as_str(), "cancelled");
    let approval = view.approval.expect("the held call's approval");
    assert_eq!(serde_json::to_value(approval.status).unwrap(), "cancelled");
    assert!(gateway.begin_mcp_request("mcp-used", "bot", None).is_none(), "an expired session is unknown");
}

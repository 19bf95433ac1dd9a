//! Attacks on the paths around the pipeline: resources, prompts and completions used to skip
//! everything but the allowlist (no kill switch, not even `all`; no pause; no rate limit; no
//! journal). Now each read passes the same gates as a call, short of approval, and is journaled
//! as `mcp.read`. Real binary, `server-everything` over stdio, the official Rust SDK as client.

use std::path::PathBuf;

use crate::common::*;
use rmcp::model::{
    ArgumentInfo, CallToolRequestParams, ClientCapabilities, ClientConfig, CompleteRequestParams,
    GetPromptRequestParams, Implementation, ReadResourceRequestParams, Reference,
};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

/// Refuses reads of dynamic resource 2, and echoes of "bad" (to pause a session by denials).
const READ_POLICY: &str = r#"package airlock

import rego.v1

deny contains {"rule": "RD1", "msg": "resource 2 holds secrets"} if {
    input.kind == "resource.read"
    input.read.target == "demo://resource/dynamic/text/2"
}

deny contains {"rule": "BAD", "msg": "no bad echoes"} if {
    input.action.tool == "every__echo"
    input.action.arguments.message == "bad"
}
"#;

fn everything() -> PathBuf {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/node_modules/.bin/mcp-server-everything");
    assert!(path.exists(), "{} is missing: run tests/interop/install.sh (scripts/test.sh does)", path.display());
    path
}

fn start(guards: &str) -> (Fixture, Airlock) {
    let extra = format!(
        "\n[guards]\n{guards}\n\n[[upstreams]]\nname = \"every\"\ncommand = \"{}\"\ntimeout_ms = 10000\n",
        everything().display()
    );
    let fx = Fixture::with_extra(READ_POLICY, &extra);
    let al = fx.start();
    (fx, al)
}

async fn client(al: &Airlock) -> RunningService<RoleClient, ClientConfig> {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", al.url)).auth_header(BOT);
    ClientConfig::new(ClientCapabilities::default(), Implementation::new("airlock-tests", "1"))
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP handshake with airlock")
}

async fn read(c: &RunningService<RoleClient, ClientConfig>, uri: &str) -> Result<(), String> {
    c.read_resource(ReadResourceRequestParams::new(uri)).await.map(|_| ()).map_err(|e| e.to_string())
}

async fn prompt(c: &RunningService<RoleClient, ClientConfig>) -> Result<(), String> {
    c.get_prompt(GetPromptRequestParams::new("every__simple-prompt")).await.map(|_| ()).map_err(|e| e.to_string())
}

async fn complete(c: &RunningService<RoleClient, ClientConfig>) -> Result<(), String> {
    let params = CompleteRequestParams::new(
        Reference::for_prompt("every__completable-prompt"),
        ArgumentInfo::new("department", "Eng"),
    );
    c.complete(params).await.map(|_| ()).map_err(|e| e.to_string())
}

/// The `mcp.read` events of the only session.
async fn reads(al: &Airlock) -> Vec<Value> {
    let sessions = al.get("/v1/sessions", ADMIN).await.body;
    let id = sessions["sessions"][0]["id"].as_str().expect("a session").to_string();
    let events = al.get(&format!("/v1/sessions/{id}/events"), ADMIN).await.body;
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "mcp.read")
        .map(|e| e["payload"].clone())
        .collect()
}

#[tokio::test]
async fn the_kill_switch_stops_reads_too() {
    let (_fx, al) = start("");
    al.wait_for_upstream("every").await;
    let c = client(&al).await;
    read(&c, "demo://resource/dynamic/text/1").await.expect("a read before the kill switch");
    prompt(&c).await.expect("a prompt before the kill switch");

    let ks = al.post("/v1/kill", ADMIN, json!({"scope": "all", "reason": "incident 42"})).await;
    assert_eq!(ks.status, 201, "{}", ks.body);
    for refused in [read(&c, "demo://resource/dynamic/text/1").await, prompt(&c).await, complete(&c).await] {
        let err = refused.expect_err("refused while the kill switch is engaged");
        assert!(err.contains("kill switch") && err.contains("incident 42"), "{err}");
    }
    // Each read was journaled, allowed or not.
    let journaled = reads(&al).await;
    assert_eq!(journaled.len(), 5, "{journaled:?}");
    assert_eq!(journaled.iter().filter(|r| r["allowed"] == false).count(), 3, "{journaled:?}");
    assert_eq!(journaled[0]["read"]["kind"], "resource.read");
    assert_eq!(journaled[0]["read"]["target"], "demo://resource/dynamic/text/1");
    assert_eq!(journaled[1]["read"]["kind"], "prompt.get");
    assert_eq!(journaled[1]["read"]["target"], "every__simple-prompt");
}

#[tokio::test]
async fn policy_decides_reads_by_kind_and_other_reads_stay_allowed() {
    let (_fx, al) = start("");
    al.wait_for_upstream("every").await;
    let c = client(&al).await;
    read(&c, "demo://resource/dynamic/text/1").await.expect("not matched by any rule");
    let err = read(&c, "demo://resource/dynamic/text/2").await.expect_err("RD1 denies it");
    assert!(err.contains("RD1") && err.contains("resource 2 holds secrets"), "{err}");
    complete(&c).await.expect("completions are allowed");
    let journaled = reads(&al).await;
    let denied = journaled.iter().find(|r| r["allowed"] == false).expect("the denied read is journaled");
    assert!(denied["reason"].as_str().unwrap().contains("RD1"), "{denied}");
    assert!(denied["policy_revision"].as_str().is_some_and(|r| r.starts_with("sha256:")), "{denied}");
}

#[tokio::test]
async fn a_paused_session_reads_nothing() {
    let (_fx, al) = start("max_consecutive_denials = 2");
    al.wait_for_upstream("every").await;
    let c = client(&al).await;
    read(&c, "demo://resource/dynamic/text/1").await.expect("the first read");
    // Two denied calls in a row pause the session.
    for _ in 0..2 {
        let mut args = serde_json::Map::new();
        args.insert("message".into(), json!("bad"));
        let r = c.call_tool(CallToolRequestParams::new("every__echo").with_arguments(args)).await.unwrap();
        assert_eq!(r.is_error, Some(true));
    }
    for refused in [read(&c, "demo://resource/dynamic/text/1").await, prompt(&c).await] {
        let err = refused.expect_err("the session is paused");
        assert!(err.contains("paused"), "{err}");
    }
}

#[tokio::test]
async fn reads_count_toward_the_agents_rate_limit() {
    // Two a minute: a token comes back every 30 s, far longer than the test.
    let (_fx, al) = start("actions_per_minute = 2");
    al.wait_for_upstream("every").await;
    let c = client(&al).await;
    read(&c, "demo://resource/dynamic/text/1").await.expect("the first read");
    prompt(&c).await.expect("the second read");
    let err = read(&c, "demo://resource/dynamic/text/1").await.expect_err("the third is over the limit");
    assert!(err.contains("2 actions per minute"), "{err}");
}

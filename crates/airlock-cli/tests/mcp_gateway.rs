//! The MCP gateway with real upstream servers (`@modelcontextprotocol/server-everything` and
//! `@modelcontextprotocol/server-filesystem` over stdio, installed by tests/interop/install.sh)
//! and a real MCP client (the official Rust SDK) connecting to `/mcp`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

fn peer_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("AIRLOCK_INTEROP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/node_modules/.bin"));
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run tests/interop/install.sh (scripts/test.sh does)", path.display());
    path
}

/// Deny writes outside `<dir>/allowed`, hold `get-sum` for a human.
fn policy(dir: &Path) -> String {
    format!(
        r#"package airlock

import rego.v1

deny contains {{"rule": "FS1", "msg": "writes are only allowed under {allowed}"}} if {{
    input.action.upstream == "fs"
    input.action.name in {{"write_file", "edit_file", "create_directory", "move_file"}}
    not startswith(input.action.arguments.path, "{allowed}/")
}}

require_approval contains {{"rule": "SUM1", "msg": "sums need a human"}} if input.action.tool == "every__get-sum"
"#,
        allowed = dir.join("files/allowed").display()
    )
}

struct Gateway {
    fx: Fixture,
    al: Airlock,
    files: PathBuf,
    pid_file: PathBuf,
}

fn start_gateway(approval_wait: u64, extra: &str) -> Gateway {
    let tmp = tempfile::tempdir().unwrap().keep();
    let files = tmp.join("files");
    std::fs::create_dir_all(files.join("allowed")).unwrap();
    std::fs::write(files.join("hello.txt"), "hello from the filesystem").unwrap();
    let pid_file = tmp.join("everything.pid");
    let everything = peer_bin("mcp-server-everything");
    let fs = peer_bin("mcp-server-filesystem");
    let upstreams = format!(
        r#"
[[upstreams]]
name = "every"
command = "sh"
args = ["-c", "echo $$ > '{pid}'; exec '{everything}'"]
timeout_ms = 10000

[[upstreams]]
name = "fs"
command = "{fs}"
args = ["{files}"]
read_only = ["read_*", "list_*"]

[mcp]
approval_wait_seconds = {approval_wait}
{extra}
"#,
        pid = pid_file.display(),
        everything = everything.display(),
        fs = fs.display(),
        files = files.display(),
    );
    let fx = Fixture::with_extra(&policy(&tmp), &upstreams);
    let al = fx.start();
    Gateway { fx, al, files, pid_file }
}

async fn client(url: &str, token: &str) -> RunningService<RoleClient, ClientConfig> {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{url}/mcp")).auth_header(token);
    ClientConfig::new(ClientCapabilities::default(), Implementation::new("airlock-tests", "1"))
        .with_protocol_version(ProtocolVersion::V_2025_06_18)
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP handshake with airlock")
}

async fn call(c: &RunningService<RoleClient, ClientConfig>, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(map) = args else { panic!("args must be an object") };
    c.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map)).await.expect("tools/call")
}

fn text(r: &CallToolResult) -> String {
    serde_json::to_value(&r.content)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.get("text").and_then(Value::as_str).map(String::from))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn session_actions(al: &Airlock) -> Vec<Value> {
    let sessions = al.get("/v1/sessions", ADMIN).await;
    let id = sessions.body["sessions"][0]["id"].as_str().expect("a session").to_string();
    al.get(&format!("/v1/sessions/{id}"), ADMIN).await.body["actions"].as_array().unwrap().clone()
}

#[tokio::test]
async fn tools_from_two_upstreams_are_listed_and_called() {
    let gw = start_gateway(30, "");
    let c = client(&gw.al.url, BOT).await;
    let info = c.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "airlock");
    assert!(info.capabilities.tools.is_some());
    assert!(info.capabilities.resources.is_none(), "airlock must not advertise what it does not forward");

    let tools = c.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"every__echo"), "{names:?}");
    assert!(names.contains(&"fs__read_text_file"), "{names:?}");
    let read = tools.iter().find(|t| t.name == "fs__list_directory").unwrap();
    assert_eq!(read.annotations.as_ref().and_then(|a| a.read_only_hint), Some(true));
    assert!(!read.input_schema.is_empty());

    let r = call(&c, "every__echo", json!({"message": "through airlock"})).await;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    assert!(text(&r).contains("through airlock"), "{}", text(&r));
    let path = gw.files.join("hello.txt");
    let r = call(&c, "fs__read_text_file", json!({"path": path.display().to_string()})).await;
    assert!(text(&r).contains("hello from the filesystem"), "{}", text(&r));

    let actions = session_actions(&gw.al).await;
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[0]["upstream"], "every");
    assert_eq!(actions[0]["name"], "echo");
    assert_eq!(actions[0]["status"], "succeeded");
    assert_eq!(actions[0]["result"]["reported_by"], "upstream");
    assert_eq!(actions[1]["annotations"]["readOnlyHint"], true);
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_denied_write_is_a_readable_tool_error_and_nothing_is_written() {
    let gw = start_gateway(30, "");
    let c = client(&gw.al.url, BOT).await;
    let outside = gw.files.join("outside.txt");
    let r = call(&c, "fs__write_file", json!({"path": outside.display().to_string(), "content": "x"})).await;
    assert_eq!(r.is_error, Some(true));
    let t = text(&r);
    assert!(t.contains("airlock denied") && t.contains("[FS1]") && t.contains("writes are only allowed"), "{t}");
    assert!(!outside.exists(), "the denied write reached the filesystem");

    let inside = gw.files.join("allowed/ok.txt");
    let r = call(&c, "fs__write_file", json!({"path": inside.display().to_string(), "content": "fine"})).await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert_eq!(std::fs::read_to_string(inside).unwrap(), "fine");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_held_call_runs_when_a_human_approves() {
    let gw = start_gateway(30, "");
    let c = client(&gw.al.url, BOT).await;
    let al = &gw.al;
    let approve = async {
        let id = loop {
            let r = al.get("/v1/approvals?status=pending", ALICE).await;
            if let Some(id) = r.body["approvals"][0]["id"].as_str() {
                break id.to_string();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let v = al.post(&format!("/v1/approvals/{id}/approve"), ALICE, json!({"comment": "ok"})).await;
        assert_eq!(v.status, StatusCode::OK, "{}", v.body);
    };
    let (r, ()) = tokio::join!(call(&c, "every__get-sum", json!({"a": 2, "b": 40})), approve);
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert!(text(&r).contains("42"), "{}", text(&r));
    let actions = session_actions(al).await;
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0]["status"], "succeeded");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_retry_after_approval_runs_the_call_exactly_once() {
    let gw = start_gateway(1, "");
    let c = client(&gw.al.url, BOT).await;
    let al = &gw.al;
    let first = call(&c, "every__get-sum", json!({"a": 1, "b": 2})).await;
    assert_eq!(first.is_error, Some(true));
    let t = text(&first);
    assert!(t.contains("holding") && t.contains("apr_") && t.contains("Retry this exact call"), "{t}");

    // A retry before the approval resumes the same approval.
    let again = call(&c, "every__get-sum", json!({"a": 1, "b": 2})).await;
    assert_eq!(again.is_error, Some(true));
    let pending = al.get("/v1/approvals?status=pending", ALICE).await;
    let list = pending.body["approvals"].as_array().unwrap();
    assert_eq!(list.len(), 1, "the retry opened a second approval");
    let id = list[0]["id"].as_str().unwrap();
    assert!(t.contains(id));
    al.post(&format!("/v1/approvals/{id}/approve"), ALICE, json!({"comment": "go"})).await;

    let done = call(&c, "every__get-sum", json!({"a": 1, "b": 2})).await;
    assert_ne!(done.is_error, Some(true), "{}", text(&done));
    assert!(text(&done).contains('3'), "{}", text(&done));

    let actions = session_actions(al).await;
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["status"], "succeeded");
    let sessions = al.get("/v1/sessions", ADMIN).await;
    let sid = sessions.body["sessions"][0]["id"].as_str().unwrap();
    let events = al.get(&format!("/v1/sessions/{sid}/events"), ADMIN).await;
    let executed = events.body["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "action.executing").count();
    assert_eq!(executed, 1, "the upstream call must run exactly once");

    // After it ran, the same call is a new action that needs a new approval.
    let later = call(&c, "every__get-sum", json!({"a": 1, "b": 2})).await;
    assert_eq!(later.is_error, Some(true));
    assert_eq!(session_actions(al).await.len(), 2);
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_killed_upstream_fails_clearly_and_comes_back() {
    let gw = start_gateway(30, "");
    let c = client(&gw.al.url, BOT).await;
    assert_ne!(call(&c, "every__echo", json!({"message": "before"})).await.is_error, Some(true));
    let pid = std::fs::read_to_string(&gw.pid_file).unwrap().trim().to_string();
    std::process::Command::new("kill").args(["-9", &pid]).status().unwrap();

    let r = call(&c, "every__echo", json!({"message": "during"})).await;
    assert_eq!(r.is_error, Some(true));
    let t = text(&r);
    assert!(t.contains("upstream `every`"), "{t}");

    // Operators see it come back in `GET /v1/upstreams` (polled, not retried as calls: five
    // identical failing calls would rightly trip the loop guard).
    let mut status = Value::Null;
    for _ in 0..300 {
        status = gw.al.get("/v1/upstreams", ADMIN).await.body;
        let every = status["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == "every").cloned();
        if every.as_ref().is_some_and(|u| u["state"] == "up" && u["connections"].as_u64() >= Some(2)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let every = status["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == "every").unwrap();
    assert_eq!(every["state"], "up", "the upstream was not restarted within 60 s: {status}");
    assert_eq!(every["transport"], "stdio");
    assert!(every["tools"].as_u64().unwrap() > 0, "{every}");
    let r = call(&c, "every__echo", json!({"message": "after"})).await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert!(text(&r).contains("after"), "{}", text(&r));
    let (code, out, err) = run(&["upstreams", "--server", &gw.al.url], &[("AIRLOCK_TOKEN", ADMIN)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("every") && out.contains("up") && out.contains("fs"), "{out}");
    let new_pid = std::fs::read_to_string(&gw.pid_file).unwrap().trim().to_string();
    assert_ne!(pid, new_pid);
    let actions = session_actions(&gw.al).await;
    assert_eq!(actions[1]["status"], "failed");
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn the_tool_allowlist_hides_and_denies_other_tools() {
    let gw = start_gateway(30, "");
    // Restart with an allowlist on the bot.
    gw.al.stop();
    let text_cfg = std::fs::read_to_string(gw.fx.config()).unwrap();
    let text_cfg = text_cfg.replacen(
        "labels = { env = \"prod\" }",
        "labels = { env = \"prod\" }\ntools = [\"every__echo\", \"fs__read_*\"]",
        1,
    );
    std::fs::write(gw.fx.config(), text_cfg).unwrap();
    let al = gw.fx.start();
    let c = client(&al.url, BOT).await;
    let names: Vec<String> = c.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert!(names.contains(&"every__echo".to_string()));
    assert!(names.iter().all(|n| n == "every__echo" || n.starts_with("fs__read_")), "{names:?}");
    let r = call(&c, "every__get-env", json!({})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("airlock.tool_allowlist"), "{}", text(&r));
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn the_mcp_endpoint_needs_an_agent_token() {
    let gw = start_gateway(30, "");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}});
    let http = reqwest::Client::new();
    let r = http.post(format!("{}/mcp", gw.al.url)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http.post(format!("{}/mcp", gw.al.url)).bearer_auth(ALICE).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn airlock_connect_bridges_a_stdio_client() {
    let gw = start_gateway(30, "");
    let mut cmd = tokio::process::Command::new(airlock_bin());
    cmd.args(["connect", "--url", &format!("{}/mcp", gw.al.url), "--task", "stdio bridge test"])
        .env("AIRLOCK_TOKEN", BOT)
        .kill_on_drop(true);
    let transport = TokioChildProcess::new(cmd).unwrap();
    let c = ClientConfig::new(ClientCapabilities::default(), Implementation::new("stdio-client", "1"))
        .with_protocol_version(ProtocolVersion::V_2025_03_26)
        .serve(transport)
        .await
        .expect("handshake through airlock connect");
    let names: Vec<String> = c.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert!(names.contains(&"every__echo".to_string()), "{names:?}");
    let r = call(&c, "every__echo", json!({"message": "bridged"})).await;
    assert!(text(&r).contains("bridged"));
    let sessions = gw.al.get("/v1/sessions", ADMIN).await;
    assert_eq!(sessions.body["sessions"][0]["task"], "stdio bridge test");
    c.cancel().await.unwrap();
}

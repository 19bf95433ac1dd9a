//! The MCP gateway with real upstream servers (`@modelcontextprotocol/server-everything` and
//! `@modelcontextprotocol/server-filesystem` over stdio, installed by tests/interop/install.sh)
//! and a real MCP client (the official Rust SDK) connecting to `/mcp`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use reqwest::StatusCode;
use rmcp::ClientHandler;
use rmcp::model::{
    ArgumentInfo, CallToolRequest, CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
    ClientRequest, CompleteRequestParams, GetPromptRequestParams, Implementation, ProgressNotificationParam,
    ProtocolVersion, ReadResourceRequestParams, Reference, ResourceContents, ServerResult,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
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

async fn call<H: ClientHandler>(c: &RunningService<RoleClient, H>, tool: &str, args: Value) -> CallToolResult {
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
    // What the upstreams support, airlock forwards and advertises: server-everything logs,
    // offers prompts and completes arguments.
    assert!(info.capabilities.logging.is_some());
    assert!(info.capabilities.prompts.is_some());
    assert!(info.capabilities.completions.is_some());

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
    let log = ProgressLog::default();
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gw.al.url)).auth_header(BOT);
    let c = log.clone().serve(StreamableHttpClientTransport::from_config(config)).await.expect("MCP handshake");
    let al = &gw.al;
    let approve = async {
        // The call holds for up to 30 s (`approval_wait_seconds`): its approval shows up before.
        let pending = poll(
            Duration::from_secs(30),
            || al.get("/v1/approvals?status=pending", ALICE),
            |r| r.body["approvals"][0]["id"].is_string(),
        )
        .await;
        let id = pending.body["approvals"][0]["id"].as_str().unwrap_or_else(|| panic!("no approval: {}", pending.body));
        let v = al.post(&format!("/v1/approvals/{id}/approve"), ALICE, json!({"comment": "ok"})).await;
        assert_eq!(v.status, StatusCode::OK, "{}", v.body);
    };
    let (r, ()) = tokio::join!(call(&c, "every__get-sum", json!({"a": 2, "b": 40})), approve);
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert!(text(&r).contains("42"), "{}", text(&r));
    let actions = session_actions(al).await;
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0]["status"], "succeeded");
    // While it was held, the client heard why (rmcp gives every request a progress token).
    let waiting = log.0.lock().unwrap().clone();
    assert!(
        waiting.iter().any(|p| p.message.as_deref().is_some_and(|m| m.contains("waiting for human approval apr_"))),
        "{waiting:?}"
    );
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn a_retry_after_approval_runs_the_call_exactly_once() {
    let gw = start_gateway(0, "");
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
    let status = poll(
        Duration::from_secs(60),
        || async { gw.al.get("/v1/upstreams", ADMIN).await.body },
        |status| {
            let every = status["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == "every");
            every.is_some_and(|u| u["state"] == "up" && u["connections"].as_u64() >= Some(2))
        },
    )
    .await;
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
    // The call was handed to the connection of an upstream that had just died: airlock can't
    // tell whether the upstream read it, so its outcome is unknown (it never is `succeeded`).
    let actions = session_actions(&gw.al).await;
    assert!(["failed", "unknown"].contains(&actions[1]["status"].as_str().unwrap_or_default()), "{}", actions[1]);
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
        "labels = { env = \"prod\" }\ntools = [\"every__echo\", \"fs__read_*\", \"every__args-*\"]",
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
    // The allowlist covers prompts and resources by their prefixed names too.
    let prompts: Vec<String> = c.list_all_prompts().await.unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(prompts, vec!["every__args-prompt".to_string()]);
    let err = c.get_prompt(GetPromptRequestParams::new("every__simple-prompt")).await.unwrap_err().to_string();
    assert!(err.contains("no prompt `every__simple-prompt`"), "{err}");
    assert!(c.list_all_resources().await.unwrap().is_empty());
    let err = c
        .read_resource(ReadResourceRequestParams::new("demo://resource/dynamic/text/1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no upstream offers the resource"), "{err}");
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
    let log = ProgressLog(Default::default(), Some(ProtocolVersion::V_2025_03_26));
    let c = log.clone().serve(transport).await.expect("handshake through airlock connect");
    let names: Vec<String> = c.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert!(names.contains(&"every__echo".to_string()), "{names:?}");
    let r = call(&c, "every__echo", json!({"message": "bridged"})).await;
    assert!(text(&r).contains("bridged"));
    let sessions = gw.al.get("/v1/sessions", ADMIN).await;
    assert_eq!(sessions.body["sessions"][0]["task"], "stdio bridge test");

    // Prompts and resources cross the bridge, and so does a call's progress.
    let prompts = c.list_all_prompts().await.unwrap();
    assert!(prompts.iter().any(|p| p.name == "every__simple-prompt"), "{prompts:?}");
    let read = c.read_resource(ReadResourceRequestParams::new("demo://resource/dynamic/text/5")).await.unwrap();
    assert!(serde_json::to_string(&read).unwrap().contains("Resource 5:"));
    // Steps 0.3 s apart: the first two are out long before the answer. The last one races the
    // answer through the upstream's SDK, rmcp and two hops, so it is not counted on.
    let seen = long_operation_progress(&c, &log).await;
    assert!(seen >= 2, "{seen} progress notifications crossed the bridge");
    c.cancel().await.unwrap();
}

/// Runs `every__trigger-long-running-operation` in three steps with a progress token and returns
/// how many progress notifications arrived for that token (all increasing, none past the total).
async fn long_operation_progress(c: &RunningService<RoleClient, ProgressLog>, log: &ProgressLog) -> usize {
    log.0.lock().unwrap().clear();
    let params = CallToolRequestParams::new("every__trigger-long-running-operation")
        .with_arguments(json!({"duration": 0.9, "steps": 3}).as_object().unwrap().clone());
    let handle = c
        .peer()
        .send_request_with_option(
            ClientRequest::CallToolRequest(CallToolRequest::new(params)),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let token = handle.progress_token.clone();
    let ServerResult::CallToolResult(r) = handle.await_response().await.unwrap() else { panic!("not a tool result") };
    assert!(text(&r).contains("Long running operation completed"), "{}", text(&r));
    let seen = poll(Duration::from_secs(2), || async { log.0.lock().unwrap().clone() }, |seen| seen.len() >= 3).await;
    assert!(seen.iter().all(|p| p.progress_token == token), "{token:?} {seen:?}");
    assert!(seen.windows(2).all(|w| w[1].progress > w[0].progress), "{seen:?}");
    assert!(seen.iter().all(|p| p.total.is_some_and(|t| p.progress <= t)), "{seen:?}");
    seen.len()
}

/// A client that keeps every progress notification it receives.
#[derive(Clone, Default)]
struct ProgressLog(std::sync::Arc<std::sync::Mutex<Vec<ProgressNotificationParam>>>, Option<ProtocolVersion>);

impl ClientHandler for ProgressLog {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("airlock-tests", "1"))
            .with_protocol_version(self.1.clone().unwrap_or(ProtocolVersion::V_2025_06_18))
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        self.0.lock().unwrap().push(params);
    }
}

#[tokio::test]
async fn prompts_resources_completions_and_progress_pass_through() {
    let gw = start_gateway(30, "");
    let log = ProgressLog::default();
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gw.al.url)).auth_header(BOT);
    let c = log.clone().serve(StreamableHttpClientTransport::from_config(config)).await.expect("MCP handshake");
    let caps = &c.peer_info().unwrap().capabilities;
    assert!(caps.prompts.is_some() && caps.resources.is_some() && caps.completions.is_some(), "{caps:?}");

    // Prompts carry the upstream prefix and resolve back to it.
    let prompts = c.list_all_prompts().await.unwrap();
    let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert!(names.contains(&"every__args-prompt"), "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("every__")), "filesystem offers no prompts: {names:?}");
    let mut args = serde_json::Map::new();
    args.insert("city".into(), json!("Lisbon"));
    let prompt = c.get_prompt(GetPromptRequestParams::new("every__args-prompt").with_arguments(args)).await.unwrap();
    let said = serde_json::to_string(&prompt.messages).unwrap();
    assert!(said.contains("Lisbon"), "{said}");
    let err = c.get_prompt(GetPromptRequestParams::new("args-prompt")).await.unwrap_err().to_string();
    assert!(err.contains("no prompt `args-prompt`"), "{err}");

    // Resources keep their URIs; a listed one and a templated one are both read from the upstream.
    let resources = c.list_all_resources().await.unwrap();
    let listed =
        resources.iter().find(|r| r.uri.starts_with("demo://resource/static/document/")).expect("a static document");
    assert!(listed.name.starts_with("every__"), "{}", listed.name);
    let read = c.read_resource(ReadResourceRequestParams::new(listed.uri.clone())).await.unwrap();
    assert!(!read.contents.is_empty());
    let templates = c.list_all_resource_templates().await.unwrap();
    let text_template = templates.iter().find(|t| t.uri_template.contains("/dynamic/text/")).expect("a text template");
    assert!(text_template.name.starts_with("every__"), "{}", text_template.name);
    let read = c.read_resource(ReadResourceRequestParams::new("demo://resource/dynamic/text/3")).await.unwrap();
    match &read.contents[0] {
        ResourceContents::TextResourceContents { text, .. } => assert!(text.starts_with("Resource 3:"), "{text}"),
        other => panic!("expected text, got {other:?}"),
    }
    let err = c.read_resource(ReadResourceRequestParams::new("nope://x")).await.unwrap_err().to_string();
    assert!(err.contains("no upstream offers the resource `nope://x`"), "{err}");

    // Completions reach the upstream's completer through the prefixed prompt name.
    let done = c
        .complete(CompleteRequestParams::new(
            Reference::for_prompt("every__completable-prompt"),
            ArgumentInfo::new("department", "Eng"),
        ))
        .await
        .unwrap();
    assert_eq!(done.completion.values, vec!["Engineering".to_string()]);

    // The upstream's progress reaches the client under the client's own token, still increasing.
    let seen = long_operation_progress(&c, &log).await;
    assert!(seen >= 2, "{seen} progress notifications reached the client");
    c.cancel().await.unwrap();
}

/// `server-everything` in its streamable HTTP mode, on a loopback port the kernel picks; killed
/// when dropped.
struct HttpEverything {
    child: std::process::Child,
    url: String,
}

impl HttpEverything {
    fn start() -> HttpEverything {
        use std::io::BufRead;
        let preload = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/loopback.cjs");
        let mut child = std::process::Command::new(peer_bin("mcp-server-everything"))
            .arg("streamableHttp")
            .env("PORT", "0")
            .env("NODE_OPTIONS", format!("--require {}", preload.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start server-everything over HTTP");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("airlock-interop: listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).expect("server-everything did not say where it listens");
        HttpEverything { child, url: format!("http://{addr}/mcp") }
    }
}

impl Drop for HttpEverything {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_streamable_http_upstream_with_local_overrides_and_a_time_limit() {
    let upstream = HttpEverything::start();
    let tmp = tempfile::tempdir().unwrap().keep();
    let extra = format!(
        r#"
[[upstreams]]
name = "web"
url = "{url}"
headers = {{ "X-Test" = "1" }}
destructive = ["echo"]
read_only = ["get-*"]

# The same server again, with a time limit shorter than its long-running operation.
[[upstreams]]
name = "slow"
url = "{url}"
timeout_ms = 100
"#,
        url = upstream.url
    );
    let fx = Fixture::with_extra(&policy(&tmp), &extra);
    let al = fx.start();
    let c = client(&al.url, BOT).await;

    let tools = c.list_all_tools().await.unwrap();
    let echo = tools.iter().find(|t| t.name == "web__echo").expect("web__echo listed");
    assert_eq!(echo.annotations.as_ref().and_then(|a| a.destructive_hint), Some(true), "the local override wins");
    let sum = tools.iter().find(|t| t.name == "web__get-sum").expect("web__get-sum listed");
    assert_eq!(sum.annotations.as_ref().and_then(|a| a.read_only_hint), Some(true));

    let r = call(&c, "web__echo", json!({"message": "over http"})).await;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    assert!(text(&r).contains("over http"));

    // A call that outlives `timeout_ms` is a tool error that says so, well before it would end.
    al.wait_for_upstream("slow").await;
    let started = std::time::Instant::now();
    let r = call(&c, "slow__trigger-long-running-operation", json!({"duration": 20, "steps": 2})).await;
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert!(text(&r).contains("did not answer within 0.1s"), "{}", text(&r));
    assert!(started.elapsed() < Duration::from_secs(15), "the time limit did not cut the call short");

    let actions = session_actions(&al).await;
    assert_eq!(actions[0]["upstream"], "web");
    assert_eq!(actions[0]["annotations"]["destructiveHint"], true, "policy saw the override: {}", actions[0]);
    // It was sent, so the upstream may have acted: the outcome is unknown, not failed.
    assert_eq!(actions[1]["status"], "unknown", "{}", actions[1]);
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn clients_and_upstreams_of_every_initialize_version_work_through_airlock() {
    let tmp = tempfile::tempdir().unwrap().keep();
    let fake = fake_mcp_server();
    let versions = ["2025-03-26", "2025-06-18", "2025-11-25"];
    let extra: String = versions
        .iter()
        .map(|v| {
            format!(
                "[[upstreams]]\nname = \"v{}\"\ncommand = \"python3\"\nargs = [\"{}\", \"{v}\"]\n\n",
                v.replace('-', ""),
                fake.display()
            )
        })
        .collect();
    let fx = Fixture::with_extra(&policy(&tmp), &extra);
    let al = fx.start();

    // Each upstream speaks only its own version, and airlock agreed to it.
    let status = al.get("/v1/upstreams", ADMIN).await;
    for v in versions {
        let name = format!("v{}", v.replace('-', ""));
        let up = status.body["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == name).unwrap().clone();
        assert_eq!(up["state"], "up", "{up}");
        assert_eq!(up["protocol_version"], v, "{up}");
    }

    // The fake lists its tools two per page: airlock follows the cursor, so all of them are there.
    let status = al.get("/v1/upstreams", ADMIN).await;
    for up in status.body["upstreams"].as_array().unwrap() {
        assert_eq!(up["tools"], 5, "{up}");
    }

    // A client of each version reaches every upstream.
    for client_version in versions {
        let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", al.url)).auth_header(BOT);
        let version: ProtocolVersion = serde_json::from_value(json!(client_version)).unwrap();
        let c = ClientConfig::new(ClientCapabilities::default(), Implementation::new("versions", "1"))
            .with_protocol_version(version)
            .serve(StreamableHttpClientTransport::from_config(config))
            .await
            .expect("handshake");
        assert_eq!(c.peer_info().unwrap().protocol_version.to_string(), client_version);
        let listed = c.list_all_tools().await.unwrap();
        assert_eq!(listed.iter().filter(|t| t.name.ends_with("__quiet")).count(), versions.len(), "{listed:?}");
        for upstream_version in versions {
            let tool = format!("v{}__version", upstream_version.replace('-', ""));
            let r = call(&c, &tool, json!({})).await;
            assert_ne!(r.is_error, Some(true), "{client_version} → {upstream_version}: {}", text(&r));
            assert_eq!(text(&r), format!("speaking {upstream_version}"));
        }
        c.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn a_kill_switch_cancels_a_call_already_out_at_the_upstream() {
    let gw = start_gateway(30, "");
    let c = client(&gw.al.url, BOT).await;
    let al = &gw.al;
    let started = std::time::Instant::now();
    let kill = async {
        // Wait until the long call is out at the upstream (it runs for 30 s), then stop that
        // upstream.
        let session = poll(
            Duration::from_secs(20),
            || async {
                let sessions = al.get("/v1/sessions", ADMIN).await;
                match sessions.body["sessions"][0]["id"].as_str() {
                    Some(id) => al.get(&format!("/v1/sessions/{id}"), ADMIN).await.body,
                    None => sessions.body,
                }
            },
            |s| s["actions"][0]["status"] == "executing",
        )
        .await;
        assert_eq!(session["actions"][0]["status"], "executing", "the call never went out: {session}");
        let ks = al.post("/v1/kill", ADMIN, json!({"scope": "upstream", "target": "every", "reason": "runaway"})).await;
        assert_eq!(ks.status, StatusCode::CREATED, "{}", ks.body);
    };
    let long = call(&c, "every__trigger-long-running-operation", json!({"duration": 30, "steps": 3}));
    let (r, ()) = tokio::join!(long, kill);
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert!(text(&r).contains("cancelled"), "{}", text(&r));
    assert!(started.elapsed() < Duration::from_secs(20), "the call ran on after the kill switch");
    let actions = session_actions(al).await;
    assert_eq!(actions[0]["status"], "unknown", "cancelled after it was sent: {}", actions[0]);
    // And the next call to that upstream is refused before it leaves airlock.
    let next = call(&c, "every__echo", json!({"message": "again"})).await;
    assert!(text(&next).contains("airlock.kill_switch") || text(&next).contains("runaway"), "{}", text(&next));
    c.cancel().await.unwrap();
}

#[tokio::test]
async fn ending_the_mcp_session_closes_the_airlock_session_and_its_pending_approval() {
    let gw = start_gateway(0, "");
    let c = client(&gw.al.url, BOT).await;
    let r = call(&c, "every__get-sum", json!({"a": 1, "b": 2})).await;
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert!(text(&r).contains("apr_"), "{}", text(&r));
    let pending = gw.al.get("/v1/approvals?status=pending", ADMIN).await;
    assert_eq!(pending.body["approvals"].as_array().unwrap().len(), 1, "{}", pending.body);
    // The client goes away properly: rmcp sends DELETE for its MCP session.
    c.cancel().await.unwrap();
    let sessions = gw.al.get("/v1/sessions", ADMIN).await;
    let id = sessions.body["sessions"][0]["id"].as_str().unwrap().to_string();
    let session = poll(
        Duration::from_secs(5),
        || async { gw.al.get(&format!("/v1/sessions/{id}"), ADMIN).await.body },
        |s| s["status"] == "closed",
    )
    .await;
    assert_eq!(session["status"], "closed", "{session}");
    assert!(session["status_reason"].as_str().unwrap_or_default().contains("MCP client ended"), "{session}");
    let pending = gw.al.get("/v1/approvals?status=pending", ADMIN).await;
    assert!(pending.body["approvals"].as_array().unwrap().is_empty(), "{}", pending.body);
}

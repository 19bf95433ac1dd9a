//! Virtual servers (`[[servers]]`, each at `/mcp/{name}`) with real upstreams
//! (`server-everything` over stdio, and the Python fakes in tests/interop/fakes) and real MCP
//! clients: the official Rust SDK, and the official TypeScript SDK through
//! tests/interop/clients/ts_client.mjs. What a server offers, under which names, what the agent's
//! allowlist and policy still decide, what happens when two tools claim one name, and that an MCP
//! session stays with its agent and its endpoint.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use reqwest::{Method, StatusCode};
use rmcp::ServiceExt;
use rmcp::model::{
    ArgumentInfo, CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, CompleteRequestParams,
    GetPromptRequestParams, Implementation, ProtocolVersion, Reference,
};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

/// An agent whose allowlist covers only two tools of `fake`, and all of `every`.
const NARROW: &str = "narrow-token";

fn interop() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

fn peer(path: &str) -> PathBuf {
    let path = interop().join(path);
    assert!(path.exists(), "{} is missing: run tests/interop/install.sh (scripts/test.sh does)", path.display());
    path
}

/// `every` (server-everything), `fake` (the fake stdio server: `version`, `meta`, `bill`, `echo`,
/// `quiet`), the agent `narrow`, and four servers:
/// - `plain`: all of `every` under its own names, `echo` renamed `say` with a new description;
/// - `picked`: what two globs match, prefixed;
/// - `flat` and `strict`: all of `fake` under its own names (policy refuses `echo` on `strict`).
fn config() -> String {
    format!(
        r#"
[[upstreams]]
name = "every"
command = "{everything}"
timeout_ms = 10000

[[upstreams]]
name = "fake"
command = "python3"
args = ["{fake}"]

[[agents]]
id = "narrow"
token = "{narrow}"
owner = "platform"
tier = "autonomous"
tools = ["fake__echo", "fake__version", "every__*"]

[[servers]]
name = "plain"
upstreams = ["every"]
prefix = false
[servers.overrides.every__echo]
rename = "say"
description = "Says the message back."
[servers.overrides.every__get-sum]
description = "Adds two numbers."

[[servers]]
name = "picked"
tools = ["fake__e*", "every__get-s*"]

[[servers]]
name = "flat"
upstreams = ["fake"]
prefix = false

[[servers]]
name = "strict"
upstreams = ["fake"]
prefix = false
"#,
        everything = peer("node_modules/.bin/mcp-server-everything").display(),
        fake = fake_mcp_server().display(),
        narrow = hash(NARROW),
    )
}

/// The common policy, plus one rule that holds on server `strict` only.
fn policy() -> String {
    format!(
        r#"{POLICY}
deny contains {{"rule": "SRV1", "msg": "the strict server does not echo"}} if {{
    input.action.server == "strict"
    input.action.name == "echo"
}}
"#
    )
}

async fn start() -> (Fixture, Airlock) {
    let fx = Fixture::with_extra(&policy(), &config());
    let al = fx.start();
    al.wait_for_upstream("every").await;
    al.wait_for_upstream("fake").await;
    (fx, al)
}

async fn client(al: &Airlock, path: &str, token: &str) -> RunningService<rmcp::RoleClient, ClientConfig> {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}{path}", al.url)).auth_header(token);
    ClientConfig::new(ClientCapabilities::default(), Implementation::new("airlock-tests", "1"))
        .with_protocol_version(ProtocolVersion::V_2025_06_18)
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap_or_else(|e| panic!("MCP handshake with airlock at {path}: {e}"))
}

async fn tool_names(c: &RunningService<rmcp::RoleClient, ClientConfig>) -> Vec<String> {
    c.list_all_tools().await.expect("tools/list").into_iter().map(|t| t.name.to_string()).collect()
}

async fn call(c: &RunningService<rmcp::RoleClient, ClientConfig>, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(map) = args else { panic!("args must be an object") };
    c.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map)).await.expect("tools/call")
}

fn text(r: &CallToolResult) -> String {
    let content = serde_json::to_value(&r.content).unwrap();
    content.as_array().unwrap().iter().filter_map(|c| c["text"].as_str()).collect::<Vec<_>>().join("\n")
}

/// Every action of every session, oldest session first.
async fn all_actions(al: &Airlock) -> Vec<Value> {
    let sessions = al.get("/v1/sessions", ADMIN).await.body["sessions"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for s in sessions.iter().rev() {
        let id = s["id"].as_str().unwrap();
        out.extend(al.get(&format!("/v1/sessions/{id}"), ADMIN).await.body["actions"].as_array().cloned().unwrap());
    }
    out
}

/// With `prefix = false` a server lists and calls tools by the upstream's own names; a rename and
/// a description reach `tools/list`, and the renamed tool is the upstream's tool. Its prompts,
/// resources and completions are its upstream's, under their own names, and nothing of the
/// upstreams it did not choose. `/mcp` is unchanged.
#[tokio::test]
async fn unprefixed_names_renames_and_descriptions_reach_the_client() {
    let (_fx, al) = start().await;
    let c = client(&al, "/mcp/plain", BOT).await;
    let info = c.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().title.as_deref(), Some("airlock gateway: plain"));
    let tools = c.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"get-sum") && names.contains(&"say"), "{names:?}");
    assert!(!names.contains(&"echo"), "renamed away: {names:?}");
    assert!(names.iter().all(|n| !n.contains("__")), "no prefixes, and nothing of `fake`: {names:?}");
    let say = tools.iter().find(|t| t.name == "say").unwrap();
    assert_eq!(say.description.as_deref(), Some("Says the message back."));
    assert!(!say.input_schema.is_empty(), "the upstream's schema comes along");
    let sum = tools.iter().find(|t| t.name == "get-sum").unwrap();
    assert_eq!(sum.description.as_deref(), Some("Adds two numbers."));

    let r = call(&c, "say", json!({"message": "virtually"})).await;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    assert_eq!(text(&r), "Echo: virtually");
    let r = call(&c, "get-sum", json!({"a": 2, "b": 40})).await;
    assert!(text(&r).contains("42"), "{}", text(&r));
    for (name, why) in [("echo", "renamed"), ("every__echo", "prefixed"), ("version", "another upstream's")] {
        let r = call(&c, name, json!({})).await;
        assert_eq!(r.is_error, Some(true), "{name} ({why}) reached a tool");
        assert!(text(&r).contains(&format!("server `plain` offers no tool `{name}`")), "{}", text(&r));
    }
    // The journal records the upstream's tool, and the server it came through.
    let actions = all_actions(&al).await;
    assert_eq!(actions.len(), 2, "names the server does not offer are not actions: {actions:?}");
    assert_eq!(
        (&actions[0]["tool"], &actions[0]["name"], &actions[0]["server"], &actions[0]["status"]),
        (&json!("every__echo"), &json!("echo"), &json!("plain"), &json!("succeeded"))
    );

    // Prompts, resources and completions: `every`'s, under `every`'s own names.
    let prompts: Vec<String> = c.list_all_prompts().await.unwrap().into_iter().map(|p| p.name).collect();
    assert!(prompts.contains(&"simple-prompt".to_string()), "{prompts:?}");
    assert!(prompts.iter().all(|p| !p.contains("__")), "{prompts:?}");
    let prompt = c.get_prompt(GetPromptRequestParams::new("simple-prompt")).await.unwrap();
    assert!(!prompt.messages.is_empty());
    let err = c.get_prompt(GetPromptRequestParams::new("every__simple-prompt")).await.unwrap_err().to_string();
    assert!(err.contains("no prompt `every__simple-prompt`"), "{err}");
    let resources = c.list_all_resources().await.unwrap();
    assert!(resources.iter().any(|r| r.uri.starts_with("demo://resource/static/document/")), "{resources:?}");
    assert!(resources.iter().all(|r| !r.name.starts_with("every__")), "{resources:?}");
    let done = c
        .complete(CompleteRequestParams::new(
            Reference::for_prompt("completable-prompt"),
            ArgumentInfo::new("department", "Eng"),
        ))
        .await
        .unwrap();
    assert_eq!(done.completion.values, vec!["Engineering".to_string()]);
    c.cancel().await.unwrap();

    // A server of `fake` only has no prompts or resources (`fake` offers none).
    let flat = client(&al, "/mcp/flat", BOT).await;
    assert!(flat.list_all_prompts().await.unwrap().is_empty());
    assert!(flat.list_all_resources().await.unwrap().is_empty());
    flat.cancel().await.unwrap();

    // `/mcp` still offers every upstream, prefixed, without the server's renames.
    let all = client(&al, "/mcp", BOT).await;
    let names = tool_names(&all).await;
    assert!(names.contains(&"every__echo".into()) && names.contains(&"fake__echo".into()), "{names:?}");
    assert!(!names.contains(&"say".into()), "{names:?}");
    all.cancel().await.unwrap();
    al.stop();
}

/// `tools` globs choose over full names, and the prefix stays unless the server drops it.
#[tokio::test]
async fn globs_choose_what_a_server_offers() {
    let (_fx, al) = start().await;
    let c = client(&al, "/mcp/picked", BOT).await;
    assert_eq!(tool_names(&c).await, ["every__get-structured-content", "every__get-sum", "fake__echo"]);
    let r = call(&c, "fake__echo", json!({"picked": true})).await;
    assert_eq!(r.structured_content, Some(json!({"picked": true})), "{r:?}");
    let r = call(&c, "fake__version", json!({})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("server `picked` offers no tool `fake__version`"), "{}", text(&r));
    // Prompts are chosen by the same globs, over their prefixed names: none of these match.
    assert!(c.list_all_prompts().await.unwrap().is_empty());
    c.cancel().await.unwrap();

    // A human sees every server, what it offers and what it withholds.
    let servers = al.get("/v1/servers", ADMIN).await;
    assert_eq!(servers.status, StatusCode::OK, "{}", servers.body);
    let picked = &servers.body["servers"][1];
    assert_eq!(picked["name"], "picked");
    assert_eq!(picked["path"], "/mcp/picked");
    assert_eq!(picked["tools"], json!(["fake__e*", "every__get-s*"]));
    assert_eq!(picked["offered"], 3);
    assert_eq!(picked["withheld"], json!([]));
    assert_eq!(servers.body["servers"][0]["renamed"], json!({"every__echo": "say"}));
    assert_eq!(al.get("/v1/servers", BOT).await.status, StatusCode::FORBIDDEN, "agents don't read it");
    let (code, out, err) = run(&["servers", "--server", &al.url], &[("AIRLOCK_TOKEN", ALICE)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("/mcp/picked") && out.contains("tools fake__e*, every__get-s*"), "{out}");
    al.stop();
}

/// The agent's allowlist is written over full names and still hides and denies on a virtual
/// server; policy sees the server (`input.action.server`) and the upstream's own tool name.
#[tokio::test]
async fn the_allowlist_and_policy_still_decide_on_a_virtual_server() {
    let (_fx, al) = start().await;
    let narrow = client(&al, "/mcp/flat", NARROW).await;
    assert_eq!(tool_names(&narrow).await, ["echo", "version"]);
    let r = call(&narrow, "bill", json!({"cost": 1})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("[airlock.tool_allowlist]"), "{}", text(&r));
    narrow.cancel().await.unwrap();

    // The same call on three endpoints: policy refuses it on `strict` only.
    let strict = client(&al, "/mcp/strict", BOT).await;
    let r = call(&strict, "echo", json!({"on": "strict"})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("[SRV1] the strict server does not echo"), "{}", text(&r));
    strict.cancel().await.unwrap();
    let flat = client(&al, "/mcp/flat", BOT).await;
    let r = call(&flat, "echo", json!({"on": "flat"})).await;
    assert_eq!(r.structured_content, Some(json!({"on": "flat"})), "{r:?}");
    flat.cancel().await.unwrap();
    let all = client(&al, "/mcp", BOT).await;
    let r = call(&all, "fake__echo", json!({"on": "mcp"})).await;
    assert_eq!(r.structured_content, Some(json!({"on": "mcp"})), "{r:?}");
    all.cancel().await.unwrap();

    let actions = all_actions(&al).await;
    let seen: Vec<(Value, Value, Value, Value)> = actions
        .iter()
        .map(|a| {
            (a["tool"].clone(), a["server"].clone(), a["status"].clone(), a["decision"]["reasons"][0]["rule"].clone())
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (json!("fake__bill"), json!("flat"), json!("denied"), json!("airlock.tool_allowlist")),
            (json!("fake__echo"), json!("strict"), json!("denied"), json!("SRV1")),
            (json!("fake__echo"), json!("flat"), json!("succeeded"), Value::Null),
            (json!("fake__echo"), Value::Null, json!("succeeded"), Value::Null),
        ]
    );
    // What policy saw: the server, the full name and the upstream's own name.
    let events = al.get(&format!("/v1/sessions/{}/events", actions[1]["session_id"].as_str().unwrap()), ADMIN).await;
    let decided = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "action.decided")
        .unwrap_or_else(|| panic!("no decision: {}", events.body));
    let input = &decided["payload"]["input"]["action"];
    assert_eq!(
        (&input["server"], &input["tool"], &input["name"]),
        (&json!("strict"), &json!("fake__echo"), &json!("echo"))
    );
    al.stop();
}

/// The official TypeScript SDK client on a virtual server lists the upstream's own names and the
/// rename, and calls them.
#[tokio::test]
async fn typescript_sdk_on_a_virtual_server() {
    let (_fx, al) = start().await;
    let out = Command::new("node")
        .arg(peer("clients/ts_client.mjs"))
        .args(["--url", &format!("{}/mcp/plain", al.url), "--token", BOT, "--list"])
        .args(["--call", "say", r#"{"message": "from typescript"}"#, "--call", "get-sum", r#"{"a": 1, "b": 2}"#])
        .args(["--call", "echo", "{}"])
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(v["server"]["title"], "airlock gateway: plain", "{v}");
    let tools: Vec<&str> = v["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(tools.contains(&"say") && tools.contains(&"get-sum") && !tools.contains(&"echo"), "{tools:?}");
    let calls = v["calls"].as_array().unwrap();
    assert_eq!((&calls[0]["is_error"], &calls[0]["text"]), (&json!(false), &json!("Echo: from typescript")), "{v}");
    assert!(calls[1]["text"].as_str().unwrap().contains('3'), "{v}");
    assert_eq!(calls[2]["is_error"], true, "{v}");
    assert!(calls[2]["text"].as_str().unwrap().contains("offers no tool `echo`"), "{v}");
    al.stop();
}

/// Two upstreams that both offer a tool of the same name are not refused at load when the file
/// does not name the tools: the server withholds the name once both list it (here, after one
/// upstream adds it while running), says so in `GET /v1/servers` and the log, and refuses a call
/// to it naming both tools. The rest of the server goes on working.
#[tokio::test]
async fn a_name_two_upstreams_come_to_share_is_withheld_and_reported() {
    let extra = format!(
        r#"
[[upstreams]]
name = "fake"
command = "python3"
args = ["{fake}"]

[[upstreams]]
name = "grow"
command = "python3"
args = ["{grow}"]

[[servers]]
name = "both"
upstreams = ["fake", "grow"]
prefix = false
"#,
        fake = fake_mcp_server().display(),
        grow = peer("fakes/growing_mcp_server.py").display(),
    );
    let fx = Fixture::with_extra(POLICY, &extra);
    let al = fx.start();
    al.wait_for_upstream("fake").await;
    al.wait_for_upstream("grow").await;
    let c = client(&al, "/mcp/both", BOT).await;
    let before = tool_names(&c).await;
    assert_eq!(before, ["bill", "echo", "grow", "meta", "quiet", "shout", "version"]);
    let r = call(&c, "grow", json!({"name": "echo"})).await;
    assert_eq!(text(&r), "grew echo");

    let withheld = |r: &Reply| r.body["servers"][0]["withheld"].as_array().is_some_and(|w| !w.is_empty());
    let status = poll(Duration::from_secs(10), || al.get("/v1/servers", ADMIN), withheld).await;
    assert_eq!(
        status.body["servers"][0]["withheld"],
        json!([{"name": "echo", "tools": ["fake__echo", "grow__echo"]}]),
        "{}",
        status.body
    );
    let after = tool_names(&c).await;
    assert_eq!(after, ["bill", "grow", "meta", "quiet", "shout", "version"], "`echo` reaches two tools now");
    let r = call(&c, "echo", json!({})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("it is the name of `fake__echo` and `grow__echo` at once"), "{}", text(&r));
    let r = call(&c, "shout", json!({"text": "still here"})).await;
    assert_eq!(text(&r), "STILL HERE");
    // `/mcp` has no such problem: both are there, prefixed.
    let all = client(&al, "/mcp", BOT).await;
    let names = tool_names(&all).await;
    assert!(names.contains(&"fake__echo".into()) && names.contains(&"grow__echo".into()), "{names:?}");
    all.cancel().await.unwrap();
    c.cancel().await.unwrap();
    let log = std::fs::read_to_string(&al.stderr_path).unwrap_or_default();
    assert!(log.contains("a virtual server withholds a tool name") && log.contains("grow__echo"), "{log}");
    // `airlock servers` shows it too, and exits 1 while a name is withheld.
    let (code, out, err) = run(&["servers", "--server", &al.url], &[("AIRLOCK_TOKEN", ADMIN)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("/mcp/both") && out.contains("echo (fake__echo, grow__echo)"), "{out}");
    al.stop();
}

/// When the file names the two tools (here, both upstreams' `read_only` lists), `airlock check`
/// refuses the collision before anything starts, naming the keys.
#[test]
fn check_refuses_a_name_the_file_shows_two_tools_would_share() {
    let extra = r#"
[[upstreams]]
name = "fs"
command = "fs-mcp"
read_only = ["read_file", "list_*"]

[[upstreams]]
name = "docs"
command = "docs-mcp"
read_only = ["read_file"]

[[servers]]
name = "flat"
upstreams = ["fs", "docs"]
prefix = false
"#;
    let fx = Fixture::with_extra(POLICY, extra);
    let (code, out, err) = run(&["check", "--config", fx.config().to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(
            "servers[0].prefix: `read_file` would be the name of `docs__read_file` (named at upstreams[1].read_only[0]) \
             and `fs__read_file` (named at upstreams[0].read_only[0]) on server `flat`"
        ),
        "{err}"
    );
    let renamed = format!("{extra}[servers.overrides.docs__read_file]\nrename = \"read_doc\"\n");
    let fx = Fixture::with_extra(POLICY, &renamed);
    let (code, out, err) = run(&["check", "--config", fx.config().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("servers 1"), "{out}");
}

/// A raw streamable HTTP request to `path`, so the test controls every header.
async fn mcp(
    al: &Airlock,
    path: &str,
    method: Method,
    token: Option<&str>,
    session: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Option<String>, String) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", al.url))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("a request to airlock");
    let status = resp.status();
    let id = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, id, resp.text().await.unwrap_or_default())
}

async fn initialize(al: &Airlock, path: &str, token: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "vs-tests", "version": "1"}}});
    let (status, id, body) = mcp(al, path, Method::POST, Some(token), None, Some(init)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = id.expect("the initialize answer names an Mcp-Session-Id");
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, body) = mcp(al, path, Method::POST, Some(token), Some(&id), Some(done)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    id
}

fn list(id: u64) -> Option<Value> {
    Some(json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {}}))
}

/// An `Mcp-Session-Id` opened on `/mcp/{name}` works only for the agent that opened it, and only
/// there; anyone else gets the same `404` as for an id nobody has. An unknown server is `401`
/// before authentication and a `404` naming the servers after it.
#[tokio::test]
async fn sessions_stay_with_their_agent_and_their_endpoint() {
    let fx = Fixture::with_extra(
        POLICY,
        &format!(
            "\n[[upstreams]]\nname = \"fake\"\ncommand = \"python3\"\nargs = [\"{}\"]\n\n[[servers]]\nname = \"flat\"\nupstreams = [\"fake\"]\nprefix = false\n",
            fake_mcp_server().display()
        ),
    );
    let al = fx.start();
    al.wait_for_upstream("fake").await;
    let theirs = initialize(&al, "/mcp/flat", BOT).await;
    let on_mcp = initialize(&al, "/mcp", BOT).await;
    let unknown =
        mcp(&al, "/mcp/flat", Method::POST, Some(CHANGE_BOT), Some("0b6e5b1c-4b7e-4f57-9c36-3f0f1d0e2a11"), list(2))
            .await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND, "{}", unknown.2);
    for (what, path, token, id) in [
        ("another agent on the session's server", "/mcp/flat", CHANGE_BOT, &theirs),
        ("the owner on /mcp", "/mcp", BOT, &theirs),
        ("a /mcp session on the server", "/mcp/flat", BOT, &on_mcp),
    ] {
        for method in [Method::POST, Method::GET, Method::DELETE] {
            let body = (method == Method::POST).then(|| list(3)).flatten();
            let r = mcp(&al, path, method.clone(), Some(token), Some(id), body).await;
            assert_eq!((r.0, &r.2), (unknown.0, &unknown.2), "{what}, {method}");
        }
    }
    // The owner's sessions still work where they were opened.
    let (status, _, body) = mcp(&al, "/mcp/flat", Method::POST, Some(BOT), Some(&theirs), list(4)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"echo\"") && !body.contains("fake__echo"), "{body}");
    let (status, _, body) = mcp(&al, "/mcp", Method::POST, Some(BOT), Some(&on_mcp), list(5)).await;
    assert!(status == StatusCode::OK && body.contains("fake__echo"), "{status} {body}");

    // Unknown servers: nothing before authentication, the list after it, to agents only.
    let (status, _, body) = mcp(&al, "/mcp/nope", Method::POST, None, None, list(6)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.contains("flat"), "{body}");
    let (status, _, body) = mcp(&al, "/mcp/nope", Method::POST, Some(ALICE), None, list(6)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!body.contains("flat"), "{body}");
    let r = al.post("/mcp/nope", BOT, json!({})).await;
    r.assert_problem(StatusCode::NOT_FOUND, "there is no MCP server `nope`");
    assert!(r.body["detail"].as_str().unwrap().contains("/mcp/flat"), "{}", r.body);
    assert_eq!(r.body["servers"], json!(["flat"]));
    let (status, _, _) = mcp(&al, "/mcp/flat/more", Method::POST, Some(BOT), None, list(7)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    al.stop();
}

/// A session on a virtual server expires when idle, exactly as on `/mcp`: the airlock session
/// behind it is closed, and its id is unknown from then on.
#[tokio::test]
async fn an_idle_session_on_a_virtual_server_expires() {
    let fx = Fixture::with_extra(
        POLICY,
        &format!(
            "\n[[upstreams]]\nname = \"fake\"\ncommand = \"python3\"\nargs = [\"{}\"]\n\n[[servers]]\nname = \"flat\"\nupstreams = [\"fake\"]\nprefix = false\n\n[mcp]\nsession_idle_seconds = 1\n",
            fake_mcp_server().display()
        ),
    );
    let al = fx.start();
    al.wait_for_upstream("fake").await;
    let id = initialize(&al, "/mcp/flat", BOT).await;
    let echo = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {}}});
    let (status, _, body) = mcp(&al, "/mcp/flat", Method::POST, Some(BOT), Some(&id), Some(echo)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Watch the airlock session behind it, not the MCP session: a request would keep it in use.
    let closed = |r: &Reply| r.body["sessions"][0]["status"] == "closed";
    let sessions = poll(Duration::from_secs(10), || al.get("/v1/sessions", ADMIN), closed).await;
    assert!(closed(&sessions), "{}", sessions.body);
    let (status, _, body) = mcp(&al, "/mcp/flat", Method::POST, Some(BOT), Some(&id), list(3)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    al.stop();
}

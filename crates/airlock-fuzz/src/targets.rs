//! The targets that parse text or talk to a running server.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use airlock_server::Config;
use reqwest::Method;
use serde_json::{Value, json};

use crate::Finding;
use crate::server::{
    ADMIN_TOKEN, AGENT_TOKEN, APPROVER_TOKEN, FuzzServer, MCP_RULES, QUICKSTART_POLICY, REFLECTING_POLICY, Reply,
    is_internal_error,
};

/// `airlock.toml` parsing and validation: `Ok`, or an error that names at least one problem.
pub fn config(data: &[u8]) -> Result<(), Finding> {
    let text = String::from_utf8_lossy(data);
    let env: BTreeMap<String, String> = [
        ("FUZZ_TOKEN".to_string(), "fuzz-token".to_string()),
        ("FUZZ_URL".to_string(), "postgres://airlock@127.0.0.1:1/airlock".to_string()),
        ("FUZZ_KEY".to_string(), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string()),
    ]
    .into();
    match Config::parse(&text, Path::new("fuzz/airlock.toml"), &env) {
        Ok(_) => Ok(()),
        Err(e) if e.problems.is_empty() => Err(Finding("a configuration was refused without naming a problem".into())),
        Err(e) => {
            // The message must render: it is what an operator reads.
            let _ = e.to_string();
            Ok(())
        }
    }
}

/// The endpoints [`http`] reaches. `{session}`, `{action}` and `{approval}` are replaced by a
/// live session, a held action and its pending approval; `{input}` by text from the input.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/sessions"),
    ("POST", "/v1/sessions/{session}/actions"),
    ("POST", "/v1/sessions/{session}/resume"),
    ("POST", "/v1/sessions/{session}/close"),
    ("POST", "/v1/actions/{action}/result"),
    ("POST", "/v1/approvals/{approval}/approve"),
    ("POST", "/v1/approvals/{approval}/deny"),
    ("POST", "/v1/kill"),
    ("DELETE", "/v1/kill/{input}"),
    ("POST", "/v1/policy/candidate"),
    ("POST", "/v1/policy/canary"),
    ("POST", "/v1/policy/reload"),
    ("POST", "/v1/policy/rollback"),
    ("POST", "/v1/policy/promote"),
    ("POST", "/v1/humans/alice/unlock"),
    ("GET", "/v1/sessions?{input}"),
    ("GET", "/v1/sessions/{session}/events?{input}"),
    ("GET", "/v1/actions/{action}?{input}"),
    ("GET", "/v1/approvals?{input}"),
    ("POST", "/v1/sessions/{input}/actions"),
    ("POST", "/v1/approvals/{input}/approve"),
    // Plans and their hand-offs (added after the routes above, so that the corpus keeps its
    // meaning).
    ("POST", "/v1/sessions/{session}/plans"),
    ("GET", "/v1/sessions/{session}/plans/{input}"),
    ("POST", "/v1/sessions/{session}/plans/{input}/steps/deploy/claim"),
];

const TOKENS: &[Option<&str>] =
    &[Some(AGENT_TOKEN), Some(APPROVER_TOKEN), Some(ADMIN_TOKEN), None, Some("not-a-token"), Some("")];

fn http_server() -> &'static FuzzServer {
    static SERVER: OnceLock<FuzzServer> = OnceLock::new();
    SERVER.get_or_init(|| FuzzServer::start(QUICKSTART_POLICY))
}

/// One request to the HTTP API: byte 0 picks the endpoint, byte 1 the caller and whether an
/// `Idempotency-Key` is sent, the rest is the body (or the path or query text). Every request
/// is answered, never with a 500, and the server stays healthy.
pub fn http(data: &[u8]) -> Result<(), Finding> {
    let [route, caller, rest @ ..] = data else { return Ok(()) };
    let (method, template) = ROUTES[usize::from(*route) % ROUTES.len()];
    let token = TOKENS[usize::from(*caller & 0x0f) % TOKENS.len()];
    let server = http_server();
    let mut path = template.to_string();
    if path.contains("{session}") || path.contains("{action}") || path.contains("{approval}") {
        let session = server.new_session()?;
        path = path.replace("{session}", &session);
        if path.contains("{action}") || path.contains("{approval}") {
            let held = held_action(server, &session)?;
            path = path.replace("{action}", &held.0).replace("{approval}", &held.1);
        }
    }
    let body = if path.contains("{input}") {
        let text: String = String::from_utf8_lossy(rest).chars().filter(|c| !c.is_control()).collect();
        path = path.replace("{input}", &text);
        Vec::new()
    } else {
        rest.to_vec()
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|e| Finding(e.to_string()))?;
    let mut headers = vec![("content-type", "application/json")];
    if caller & 0x80 != 0 {
        headers.push(("idempotency-key", "fuzz-key"));
    }
    let what = format!("{method} {template}");
    let reply = match server.send(method, &path, token, &headers, body) {
        // A path the HTTP client itself refuses never reached the server.
        Err(Finding(e)) if e.contains("builder error") => return Ok(()),
        other => other?,
    };
    check_answer(&what, &reply)?;
    server.healthy(&what)
}

/// Submits a call the quickstart policy holds for approval: its action and approval ids. When an
/// earlier input changed the server so that the call is not held (a kill switch, a canary of a
/// candidate policy), that is undone and the call tried once more.
fn held_action(server: &FuzzServer, session: &str) -> Result<(String, String), Finding> {
    let submit = || {
        server.json(
            Method::POST,
            &format!("/v1/sessions/{session}/actions"),
            AGENT_TOKEN,
            &json!({"tool": "nodepool.scale", "arguments": {"pool": "web", "count": 12}}),
        )
    };
    let mut reply = submit()?;
    if reply.json().is_none_or(|a| a["approval_id"].as_str().is_none()) {
        release_kill_switches(server)?;
        let cleared = server.send(Method::DELETE, "/v1/policy/candidate", Some(ADMIN_TOKEN), &[], Vec::new())?;
        check_answer("DELETE /v1/policy/candidate", &cleared)?;
        reply = submit()?;
    }
    let action = reply.json().unwrap_or(Value::Null);
    match (action["id"].as_str(), action["approval_id"].as_str()) {
        (Some(id), Some(approval)) => Ok((id.to_string(), approval.to_string())),
        _ => Err(Finding(format!("a call the policy holds was answered {}: {action}", reply.status))),
    }
}

fn release_kill_switches(server: &FuzzServer) -> Result<(), Finding> {
    let engaged = server.send(Method::GET, "/v1/kill", Some(ADMIN_TOKEN), &[], Vec::new())?.json().unwrap_or_default();
    let ids: Vec<String> = engaged["kill_switches"]
        .as_array()
        .map(|list| list.iter().filter_map(|k| k["id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    for id in ids {
        let reply = server.send(Method::DELETE, &format!("/v1/kill/{id}"), Some(ADMIN_TOKEN), &[], Vec::new())?;
        check_answer("DELETE /v1/kill/{id}", &reply)?;
    }
    Ok(())
}

fn check_answer(what: &str, reply: &Reply) -> Result<(), Finding> {
    if is_internal_error(reply.status) {
        return Err(Finding(format!("{what} answered {}: {}", reply.status, String::from_utf8_lossy(&reply.body))));
    }
    // Every error is an RFC 9457 problem a client can read.
    if reply.status >= 400 && reply.status != 503 && reply.json().is_none() {
        return Err(Finding(format!(
            "{what} answered {} with a body that is not JSON: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )));
    }
    Ok(())
}

fn reflecting_server() -> &'static (FuzzServer, Mutex<Option<String>>) {
    static SERVER: OnceLock<(FuzzServer, Mutex<Option<String>>)> = OnceLock::new();
    SERVER.get_or_init(|| (FuzzServer::start(REFLECTING_POLICY), Mutex::new(None)))
}

/// The arguments of one tool call (JSON if the bytes are JSON, else a string), under a policy
/// that takes `deny`, `approve`, `warn`, `redact` and `cost_usd` from them. Whatever the
/// arguments say, the answer is a decision, and an enforced deny entry always denies, an
/// enforced approval entry never allows.
pub fn policy_input(data: &[u8]) -> Result<(), Finding> {
    let arguments =
        serde_json::from_slice::<Value>(data).unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(data) }));
    let (server, session) = reflecting_server();
    let mut session = session.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let id = match session.as_ref() {
        Some(id) => id.clone(),
        None => server.new_session()?,
    };
    let body = json!({"tool": "fuzz.reflect", "arguments": arguments, "justification": "fuzz"});
    let reply = server.json(Method::POST, &format!("/v1/sessions/{id}/actions"), AGENT_TOKEN, &body)?;
    check_answer("POST /v1/sessions/{id}/actions", &reply)?;
    if !(200..300).contains(&reply.status) {
        // Refused before a decision (arguments not an object, a paused session…): start afresh.
        *session = None;
        return Ok(());
    }
    *session = Some(id);
    let action = reply.json().unwrap_or(Value::Null);
    let effect = action["decision"]["effect"].as_str().unwrap_or("");
    if !matches!(effect, "allow" | "deny" | "require_approval") {
        return Err(Finding(format!("a call was answered {} without a decision: {action}", reply.status)));
    }
    if enforced(&arguments, "deny") && effect != "deny" {
        return Err(Finding(format!("an enforced deny entry was answered `{effect}`: {action}")));
    }
    if enforced(&arguments, "approve") && effect == "allow" {
        return Err(Finding(format!("an enforced approval entry was answered `allow`: {action}")));
    }
    Ok(())
}

/// Whether `arguments[set]` has an entry the policy enforces (not `"enforcement": "warn"`).
fn enforced(arguments: &Value, set: &str) -> bool {
    let entries: Vec<&Value> = match arguments.get(set) {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(Value::Object(fields)) => fields.values().collect(),
        _ => return false,
    };
    entries.into_iter().any(|e| e.get("enforcement").and_then(Value::as_str) != Some("warn"))
}

fn mcp_server() -> &'static (FuzzServer, Mutex<Option<String>>) {
    static SERVER: OnceLock<(FuzzServer, Mutex<Option<String>>)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let upstream = crate::upstream::start();
        let mut policy = QUICKSTART_POLICY.to_vec();
        policy.push(MCP_RULES);
        (FuzzServer::start_with(&policy, Some(&upstream)), Mutex::new(None))
    })
}

const MCP_HEADERS: [(&str, &str); 2] =
    [("content-type", "application/json"), ("accept", "application/json, text/event-stream")];

fn mcp_initialize(server: &FuzzServer) -> Result<String, Finding> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "airlock-fuzz", "version": "0"}}});
    let reply = server.send(Method::POST, "/mcp", Some(AGENT_TOKEN), &MCP_HEADERS, init.to_string().into_bytes())?;
    let session = reply
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| Finding(format!("MCP initialize answered {} without a session", reply.status)))?;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let headers = [MCP_HEADERS[0], MCP_HEADERS[1], ("mcp-session-id", session.as_str())];
    server.send(Method::POST, "/mcp", Some(AGENT_TOKEN), &headers, initialized.into_bytes())?;
    Ok(session)
}

/// One message posted to `/mcp` in an initialised session (re-initialised when an input ended
/// it). It is answered, never with a 500 or a dropped connection.
pub fn mcp(data: &[u8]) -> Result<(), Finding> {
    let (server, session) = mcp_server();
    let mut session = session.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let id = match session.as_ref() {
        Some(id) => id.clone(),
        None => mcp_initialize(server)?,
    };
    let headers =
        [MCP_HEADERS[0], MCP_HEADERS[1], ("mcp-session-id", id.as_str()), ("mcp-protocol-version", "2025-06-18")];
    let reply = server.send(Method::POST, "/mcp", Some(AGENT_TOKEN), &headers, data.to_vec())?;
    if is_internal_error(reply.status) {
        return Err(Finding(format!("POST /mcp answered {}: {}", reply.status, String::from_utf8_lossy(&reply.body))));
    }
    *session = (reply.status != 404).then_some(id);
    server.healthy("POST /mcp")
}

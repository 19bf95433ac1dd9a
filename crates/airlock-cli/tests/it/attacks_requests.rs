//! Attacks through what an agent asks for: a requester who approves their own work over MCP,
//! and arguments shaped to slip past a policy rule. Each test plays the attacker against the real
//! `airlock` binary; docs/security.md says what airlock promises and which test here shows it.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;
use crate::raw_mcp::Mcp;

/// Token of `alices-bot`, an agent configured to act for alice.
const ALICES_BOT: &str = "alices-bot-token";

/// A fake stdio MCP server whose tools declare typed arguments (see the file).
fn typed_mcp_server() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/fakes/typed_mcp_server.py")
}

/// The typed fake as upstream `net`, `alices-bot`, and `extra`.
fn extra_toml(extra: &str) -> String {
    format!(
        r#"
[[agents]]
id = "alices-bot"
token = "{token}"
owner = "platform"
tier = "autonomous"
on_behalf_of = "alice"

[[upstreams]]
name = "net"
command = "python3"
args = ["{server}"]
{extra}
"#,
        token = hash(ALICES_BOT),
        server = typed_mcp_server().display()
    )
}

/// The one pending approval of `tool`, as a human sees it: `(approval id, session id)`.
async fn pending_approval(al: &Airlock, tool: &str) -> (String, String) {
    let r = al.get("/v1/approvals?status=pending", BOB).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let found: Vec<&Value> =
        r.body["approvals"].as_array().into_iter().flatten().filter(|a| a["action"]["tool"] == tool).collect();
    assert_eq!(found.len(), 1, "one pending approval of `{tool}`: {}", r.body);
    let id = found[0]["id"].as_str().unwrap().to_string();
    let session = found[0]["session_id"].as_str().unwrap().to_string();
    (id, session)
}

// --- 4. Maker-checker over MCP --------------------------------------------------------------

/// Holds `net__echo` for an SRE; any call with `loop` in its text repeats until the loop guard
/// pauses its session.
const HOLD_POLICY: &str = r#"package airlock

import rego.v1

require_approval contains {"rule": "HOLD", "msg": "echoes need an SRE", "groups": ["sre"]} if {
    input.action.tool == "net__echo"
    input.action.arguments.text != "loop"
}
"#;

/// A requester's MCP session: a held call of theirs that they try to approve themselves, and that
/// another SRE approves instead, whichever way the requester was named.
async fn the_requester_cannot_approve(al: &Airlock, token: &str, headers: &[(&str, &str)], meta: Option<Value>) {
    let mcp = Mcp::new(al);
    let session = mcp.initialize_with(token, headers, meta).await;
    let held = mcp.call(token, &session, 2, "net__echo", json!({"text": "rotate the keys"})).await;
    let (is_error, text) = held.text(2);
    assert!(is_error && text.contains("holding `net__echo` for human approval"), "{text}");
    let (approval, airlock_session) = pending_approval(al, "net__echo").await;
    let s = al.get(&format!("/v1/sessions/{airlock_session}"), ADMIN).await;
    assert_eq!(s.body["on_behalf_of"], "alice", "the MCP session acts for alice: {}", s.body);

    let url = format!("/v1/approvals/{approval}/approve");
    let refused = al.post(&url, ALICE, json!({"comment": "my own request, looks fine"})).await;
    refused.assert_problem(StatusCode::FORBIDDEN, "`alice` requested this session's work");
    assert_eq!(refused.body["rule"], "maker_checker", "{}", refused.body);
    let still = al.get(&format!("/v1/approvals/{approval}"), BOB).await;
    assert_eq!(still.body["status"], "pending", "{}", still.body);
    let approved = al.post(&url, BOB, json!({"comment": "checked"})).await;
    assert_eq!(approved.body["status"], "approved", "{}", approved.body);
    // The agent's retry runs the approved call once.
    let ran = mcp.call(token, &session, 3, "net__echo", json!({"text": "rotate the keys"})).await;
    let (is_error, text) = ran.text(3);
    assert!(!is_error && text.contains("rotate the keys"), "{text}");
}

#[tokio::test]
async fn a_requester_cannot_approve_their_own_request_over_mcp() {
    let fx = Fixture::with_extra(HOLD_POLICY, &format!("\n[mcp]\napproval_wait_seconds = 0\n{}", extra_toml("")));
    let al = fx.start();
    al.wait_for_upstream("net").await;
    // Named by the client, in a header on `initialize` …
    the_requester_cannot_approve(&al, BOT, &[("Airlock-On-Behalf-Of", "alice")], None).await;
    // … or in `initialize`'s `_meta` …
    the_requester_cannot_approve(&al, BOT, &[], Some(json!({"airlock/on_behalf_of": "alice"}))).await;
    // … or by the configuration, which the agent can't drop by saying nothing.
    the_requester_cannot_approve(&al, ALICES_BOT, &[], None).await;
    // Saying the same again is fine.
    the_requester_cannot_approve(&al, ALICES_BOT, &[("airlock-on-behalf-of", "alice")], None).await;
}

/// `airlock connect --on-behalf-of` sends the requester for clients that only launch stdio
/// servers; a requester airlock refuses stops the bridge with the reason.
#[tokio::test]
async fn airlock_connect_names_the_requester() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let fx = Fixture::with_extra(HOLD_POLICY, &format!("\n[mcp]\napproval_wait_seconds = 0\n{}", extra_toml("")));
    let al = fx.start();
    al.wait_for_upstream("net").await;
    let bridge = |human: &str| {
        let mut cmd = tokio::process::Command::from(airlock_cmd());
        cmd.args(["connect", "--url", &format!("{}/mcp", al.url), "--on-behalf-of", human])
            .env("AIRLOCK_TOKEN", BOT)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd.spawn().expect("start airlock connect")
    };
    let mut child = bridge("alice");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for message in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
            "capabilities": {}, "clientInfo": {"name": "stdio-client", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "net__echo", "arguments": {"text": "through the bridge"}}}),
    ] {
        stdin.write_all(format!("{message}\n").as_bytes()).await.unwrap();
    }
    let answer = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if v["id"] == 2 {
                return v;
            }
        }
        Value::Null
    })
    .await
    .expect("the bridge answers the call");
    assert_eq!(answer["result"]["isError"], true, "held for approval: {answer}");
    let (approval, session) = pending_approval(&al, "net__echo").await;
    let s = al.get(&format!("/v1/sessions/{session}"), ADMIN).await;
    assert_eq!(s.body["on_behalf_of"], "alice", "{}", s.body);
    let refused = al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "mine"})).await;
    assert_eq!(refused.body["rule"], "maker_checker", "{}", refused.body);
    drop(stdin);
    let _ = child.wait().await;

    let refused = bridge("mallory").wait_with_output().await.expect("airlock connect ends");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("names `mallory`, who is not a configured human"), "{stderr}");
}

#[tokio::test]
async fn an_agent_cannot_drop_or_swap_its_requester_at_initialize() {
    let fx = Fixture::with_extra(HOLD_POLICY, &extra_toml(""));
    let al = fx.start();
    let mcp = Mcp::new(&al);
    // Each refusal is a JSON-RPC error for `initialize` that says why; no session comes of it.
    type Headers = Vec<(&'static str, &'static str)>;
    let refusals: Vec<(&str, Headers, Option<Value>, &str)> = vec![
        // An agent configured to act for alice claims bob, so that alice could approve.
        (ALICES_BOT, vec![("Airlock-On-Behalf-Of", "bob")], None, "acts for `alice`"),
        (ALICES_BOT, vec![], Some(json!({"airlock/on_behalf_of": "bob"})), "can't act for `bob`"),
        // A human airlock does not know.
        (BOT, vec![("Airlock-On-Behalf-Of", "mallory")], None, "names `mallory`, who is not a configured human"),
        // Header and `_meta` disagree: which one counts is not airlock's guess to make.
        (
            BOT,
            vec![("Airlock-On-Behalf-Of", "alice")],
            Some(json!({"airlock/on_behalf_of": "bob"})),
            "names `alice` and `_meta[\"airlock/on_behalf_of\"]` names `bob`",
        ),
        // Twice, or empty, or not a string.
        (BOT, vec![("Airlock-On-Behalf-Of", "alice"), ("Airlock-On-Behalf-Of", "bob")], None, "more than once"),
        (ALICES_BOT, vec![("Airlock-On-Behalf-Of", " ")], None, "is empty"),
        (BOT, vec![], Some(json!({"airlock/on_behalf_of": ["alice"]})), "must be a human's id"),
    ];
    for (token, headers, meta, needle) in refusals {
        let r = mcp.try_initialize(token, &headers, meta.clone()).await;
        let error = r.answer(1).expect_err(needle);
        assert_eq!(error["code"], -32602, "{error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "`{message}` lacks `{needle}` ({headers:?}, {meta:?})");
        // The session rmcp created for the handshake ends with it: its id leads nowhere.
        if let Some(id) = &r.session {
            let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
            let gone = poll(
                std::time::Duration::from_secs(5),
                || mcp.post(token, Some(id), list.clone(), &[]),
                |r| r.status == StatusCode::NOT_FOUND,
            )
            .await;
            assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
        }
    }
    let sessions = al.get("/v1/sessions", ADMIN).await;
    assert_eq!(sessions.body["sessions"], json!([]), "{}", sessions.body);
    // The HTTP API applies the same floor.
    let r = al.post("/v1/sessions", ALICES_BOT, json!({"task": "t", "on_behalf_of": "bob"})).await;
    r.assert_problem(StatusCode::FORBIDDEN, "acts for `alice`");
    let r = al.post("/v1/sessions", ALICES_BOT, json!({"task": "t"})).await;
    assert_eq!(r.body["on_behalf_of"], "alice", "{}", r.body);
}

#[tokio::test]
async fn a_requester_cannot_resume_their_paused_mcp_session() {
    let guards = "\n[guards]\nloop_repeats = 2\nloop_window_seconds = 600\n";
    let fx = Fixture::with_extra(HOLD_POLICY, &format!("{guards}{}", extra_toml("")));
    let al = fx.start();
    al.wait_for_upstream("net").await;
    let mcp = Mcp::new(&al);
    let session = mcp.initialize_with(BOT, &[("Airlock-On-Behalf-Of", "alice")], None).await;
    let first = mcp.call(BOT, &session, 2, "net__echo", json!({"text": "loop"})).await;
    assert!(!first.text(2).0, "{}", first.body);
    let (is_error, text) = mcp.call(BOT, &session, 3, "net__echo", json!({"text": "loop"})).await.text(3);
    assert!(is_error && text.contains("airlock.loop"), "{text}");
    let sessions = al.get("/v1/sessions", ADMIN).await;
    let paused = sessions.body["sessions"][0].clone();
    assert_eq!((paused["status"].as_str(), paused["on_behalf_of"].as_str()), (Some("paused"), Some("alice")));
    let url = format!("/v1/sessions/{}/resume", paused["id"].as_str().unwrap());

    let refused = al.post(&url, ALICE, json!({"comment": "it was me, carry on"})).await;
    refused.assert_problem(StatusCode::FORBIDDEN, "can't resume it");
    assert_eq!(refused.body["rule"], "maker_checker", "{}", refused.body);
    let resumed = al.post(&url, BOB, json!({"comment": "checked the loop"})).await;
    assert_eq!(resumed.body["status"], "active", "{}", resumed.body);
}

// --- 9. Arguments checked against the tool's input schema ------------------------------------

/// Port 22 stays closed; the rule is written for the number, as the tool's schema says it is.
const PORT_POLICY: &str = r#"package airlock

import rego.v1

deny contains {"rule": "SSH1", "msg": "port 22 stays closed"} if input.action.arguments.port == 22
"#;

/// What the typed fake received, one call per entry.
fn calls_received(fx: &Fixture) -> Vec<Value> {
    std::fs::read_to_string(fx.dir.path().join("calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn arguments_that_miss_the_tools_schema_are_denied_before_policy() {
    let fx = Fixture::with_extra(PORT_POLICY, &extra_toml(""));
    let al = fx.start();
    al.wait_for_upstream("net").await;

    // Over HTTP: the string "22" is not the number 22, so the policy rule would not fire, and
    // the lenient upstream would open port 22. The schema says `port` is an integer.
    let s = al.session(BOT).await;
    let r = al.act(BOT, &s, "net__open_port", json!({"port": "22"})).await;
    assert_eq!(r.body["status"], "denied", "{}", r.body);
    assert_eq!(r.body["decision"]["decided_by"], "guard", "{}", r.body);
    let reasons = r.body["decision"]["reasons"].as_array().cloned().unwrap_or_default();
    assert_eq!(reasons.len(), 1, "{}", r.body);
    assert_eq!(reasons[0]["rule"], "airlock.input_schema");
    let msg = reasons[0]["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("`arguments.port`") && msg.contains("integer"), "{msg}");
    // Several problems: one reason each, saying where; the values themselves are not repeated.
    let r = al.act(BOT, &s, "net__open_port", json!({"port": 70000, "note": "secret-note-value"})).await;
    let reasons: Vec<String> = r.body["decision"]["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| format!("[{}] {}", r["rule"].as_str().unwrap_or_default(), r["msg"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().all(|r| r.starts_with("[airlock.input_schema]")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("`arguments.port`") && r.contains("maximum")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("`arguments`") && r.contains("note")), "{reasons:?}");
    assert!(!r.body["decision"]["reasons"].to_string().contains("secret-note-value"), "{reasons:?}");
    // The number is what policy rules on; a valid call goes through.
    let r = al.act(BOT, &s, "net__open_port", json!({"port": 22})).await;
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "SSH1", "{}", r.body);
    let r = al.act(BOT, &s, "net__open_port", json!({"port": 443})).await;
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);

    // Over MCP: the same check, the same rule.
    let mcp = Mcp::new(&al);
    let session = mcp.initialize_with(BOT, &[], None).await;
    let (is_error, text) = mcp.call(BOT, &session, 2, "net__open_port", json!({"port": "22"})).await.text(2);
    assert!(is_error && text.contains("[airlock.input_schema]") && text.contains("`arguments.port`"), "{text}");
    let (is_error, text) = mcp.call(BOT, &session, 3, "net__open_port", json!({"port": 8443})).await.text(3);
    assert!(!is_error && text == "opened port 8443", "{text}");

    // A schema that does not compile denies the calls to its tool, and is listed as unusable.
    let (is_error, text) = mcp.call(BOT, &session, 4, "net__broken", json!({"n": 1})).await.text(4);
    assert!(is_error && text.contains("[airlock.input_schema]") && text.contains("does not compile"), "{text}");
    let status = al.get("/v1/upstreams", ADMIN).await;
    let net = &status.body["upstreams"][0];
    assert_eq!(net["validate_input"], true, "{}", status.body);
    assert_eq!(net["unusable_schemas"][0]["tool"], "broken", "{}", status.body);

    // Nothing that failed the check reached the upstream: it saw the two valid calls only.
    let received: Vec<Value> = calls_received(&fx).into_iter().map(|c| c["arguments"].clone()).collect();
    assert_eq!(received, vec![json!({"port": 443}), json!({"port": 8443})]);
    // And every denial is in the journal, decided by the guard.
    let events = al.get(&format!("/v1/sessions/{s}/events"), ADMIN).await;
    let denied = events.body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["kind"] == "action.decided" && e["payload"]["decision"]["reasons"][0]["rule"] == "airlock.input_schema"
        })
        .count();
    assert_eq!(denied, 2, "{}", events.body);
}

#[tokio::test]
async fn an_upstream_can_turn_the_input_check_off() {
    let fx = Fixture::with_extra(PORT_POLICY, &extra_toml("validate_input = false"));
    let al = fx.start();
    al.wait_for_upstream("net").await;
    let s = al.session(BOT).await;
    // What the check prevents: the string passes the number's rule and the upstream opens 22.
    let r = al.act(BOT, &s, "net__open_port", json!({"port": "22"})).await;
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    let r = al.act(BOT, &s, "net__broken", json!({"n": 1})).await;
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    let status = al.get("/v1/upstreams", ADMIN).await;
    assert_eq!(status.body["upstreams"][0]["validate_input"], false, "{}", status.body);
    assert_eq!(status.body["upstreams"][0]["unusable_schemas"], json!([]), "{}", status.body);
}

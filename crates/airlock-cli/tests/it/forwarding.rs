//! What airlock forwards between its MCP clients and its upstreams besides tool calls, tested
//! with the official TypeScript SDK as the client (tests/interop/clients/ts_forwarding.mjs) and a
//! fixture upstream written with the same SDK (tests/interop/fixtures/forwarding_fixture.mjs)
//! whose tools make it ping, log, change its tool list, and so on.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use serde_json::Value;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

fn require(path: PathBuf) -> PathBuf {
    assert!(path.exists(), "{} is missing: run tests/interop/install.sh (scripts/test.sh does)", path.display());
    path
}

/// airlock with the fixture upstream `fx` (stdio) on `/mcp`, and the virtual server `pinger`
/// offering only its tool `ping_client`.
fn start() -> (Fixture, Airlock) {
    let fixture = require(interop_dir().join("fixtures/forwarding_fixture.mjs"));
    require(interop_dir().join("node_modules/@modelcontextprotocol/sdk"));
    let node = which_node();
    let extra = format!(
        "\n[[upstreams]]\nname = \"fx\"\ncommand = \"{node}\"\nargs = [\"{}\"]\n\n\
         [[servers]]\nname = \"pinger\"\ntools = [\"fx__ping_client\"]\n",
        fixture.display()
    );
    let fx = Fixture::with_extra(POLICY, &extra);
    let al = fx.start();
    (fx, al)
}

/// The machine's `node`, by absolute path: stdio upstreams inherit no `PATH` from airlock.
fn which_node() -> String {
    let out = Command::new("sh").args(["-c", "command -v node"]).output().expect("find node");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!path.is_empty(), "node is not on PATH");
    path
}

/// Runs the forwarding client against `url` with `args`; its JSON report.
fn client(url: &str, args: &[&str]) -> Value {
    let out = Command::new("node")
        .arg(require(interop_dir().join("clients/ts_forwarding.mjs")))
        .args(["--url", url, "--token", BOT])
        .args(args)
        .output()
        .expect("run client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed: {stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

fn step(v: &Value, n: usize) -> &Value {
    &v["steps"][n]
}

#[test]
fn ping_is_answered_both_ways() {
    let (_fx, al) = start();
    let v = client(&format!("{}/mcp", al.url), &["--ping", "--call", "fx__ping_client", "{}"]);
    // The client's ping is answered by airlock.
    assert_eq!(step(&v, 0)["ok"], true, "{v}");
    // The upstream's ping (sent during a call) is answered by airlock as its client.
    assert_eq!(step(&v, 1)["result"]["is_error"], false, "{v}");
    assert_eq!(step(&v, 1)["result"]["text"], "pong", "{v}");
}

fn notified(v: &Value, method: &str) -> usize {
    v["notifications"].as_array().unwrap().iter().filter(|n| n["method"] == method).count()
}

#[test]
fn list_changes_reach_the_clients_that_can_see_them() {
    let (_fx, al) = start();
    // A second session, on a virtual server whose offer the change does not touch, listens
    // while the first makes the upstream change its lists.
    let url = format!("{}/mcp/pinger", al.url);
    let bystander = std::thread::spawn(move || client(&url, &["--list", "--wait", "4000", "--list"]));
    // The first session waits for the bystander to connect before it changes anything.
    let v = client(
        &format!("{}/mcp", al.url),
        &[
            "--wait",
            "1500",
            "--call",
            "fx__add_tool",
            "{}",
            "--call",
            "fx__add_resource",
            "{}",
            "--wait",
            "1500",
            "--list",
        ],
    );
    assert_eq!(v["capabilities"]["tools"]["listChanged"], true, "{v}");
    assert_eq!(notified(&v, "notifications/tools/list_changed"), 1, "{v}");
    assert_eq!(notified(&v, "notifications/resources/list_changed"), 1, "{v}");
    // The tool list was re-read before the client heard of it.
    let tools = step(&v, 4)["result"].as_array().unwrap();
    assert!(tools.iter().any(|t| t == "fx__extra"), "{v}");

    let b = bystander.join().unwrap();
    assert_eq!(step(&b, 0)["result"], serde_json::json!(["fx__ping_client"]), "{b}");
    assert_eq!(step(&b, 2)["result"], serde_json::json!(["fx__ping_client"]), "{b}");
    assert_eq!(notified(&b, "notifications/tools/list_changed"), 0, "{b}");
}

fn requests(v: &Value, method: &str) -> usize {
    v["requests"].as_array().unwrap().iter().filter(|r| r["method"] == method).count()
}

/// The `mcp.forwarded` events journaled so far, over every session.
async fn forwarded(al: &Airlock) -> Vec<Value> {
    let sessions = al.get("/v1/sessions", ADMIN).await.body;
    let mut out = Vec::new();
    for s in sessions["sessions"].as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let events = al.get(&format!("/v1/sessions/{id}/events"), ADMIN).await.body;
        for e in events["events"].as_array().unwrap() {
            if e["kind"] == "mcp.forwarded" {
                out.push(e["payload"].clone());
            }
        }
    }
    out
}

/// Waits up to 5 s for the journal (written in the background) to hold `n` forwarded records.
fn forwarded_at_least(al: &Airlock, n: usize) -> Vec<Value> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let records = forwarded(al).await;
            if records.len() >= n || tokio::time::Instant::now() > deadline {
                return records;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    })
}

#[test]
fn sampling_elicitation_and_roots_reach_the_client_whose_call_asked() {
    let (_fx, al) = start();
    let v = client(
        &format!("{}/mcp", al.url),
        &[
            "--call",
            "fx__sample",
            r#"{"prompt":"what is 2+2"}"#,
            "--call",
            "fx__elicit_form",
            "{}",
            "--call",
            "fx__elicit_url",
            "{}",
            "--call",
            "fx__roots",
            "{}",
        ],
    );
    // airlock advertises what its upstream supports: logging and subscriptions, no prompts.
    assert!(v["capabilities"]["logging"].is_object(), "{v}");
    assert_eq!(v["capabilities"]["resources"]["subscribe"], true, "{v}");
    assert!(v["capabilities"]["prompts"].is_null(), "{v}");
    assert!(v["capabilities"]["completions"].is_null(), "{v}");
    // The client's answers reached the upstream, which quotes them.
    assert_eq!(step(&v, 0)["result"]["text"], "sampled: what is 2+2", "{v}");
    assert_eq!(step(&v, 1)["result"]["text"], r#"{"action":"accept","content":{"name":"Ada"}}"#, "{v}");
    assert_eq!(step(&v, 2)["result"]["text"], r#"{"action":"accept"}"#, "{v}");
    assert_eq!(step(&v, 3)["result"]["text"], r#"[{"uri":"file:///work/project","name":"project"}]"#, "{v}");
    assert_eq!(requests(&v, "sampling/createMessage"), 1, "{v}");
    assert_eq!(requests(&v, "elicitation/create"), 2, "{v}");
    assert_eq!(requests(&v, "roots/list"), 1, "{v}");
    // Each crossing is journaled on the session, with the action that caused it.
    let records = forwarded_at_least(&al, 4);
    let methods: Vec<&str> = records.iter().map(|r| r["method"].as_str().unwrap()).collect();
    for m in ["sampling/createMessage", "elicitation/create", "roots/list"] {
        assert!(methods.contains(&m), "{m} not journaled: {records:?}");
    }
    let sample = records.iter().find(|r| r["method"] == "sampling/createMessage").unwrap();
    assert_eq!(sample["upstream"], "fx");
    assert_eq!(sample["outcome"], "delivered");
    assert!(sample["action_id"].as_str().is_some_and(|a| !a.is_empty()), "{sample}");
    assert_eq!(sample["content"]["result"]["content"]["text"], "sampled: what is 2+2", "{sample}");
}

#[test]
fn a_client_that_did_not_offer_sampling_is_not_asked_and_the_upstream_hears_why() {
    let (_fx, al) = start();
    let v = client(&format!("{}/mcp", al.url), &["--bare", "--call", "fx__sample", "{}", "--call", "fx__roots", "{}"]);
    for n in 0..2 {
        assert_eq!(step(&v, n)["result"]["is_error"], true, "{v}");
    }
    assert!(step(&v, 0)["result"]["text"].as_str().unwrap().contains("did not advertise sampling"), "{v}");
    assert!(step(&v, 1)["result"]["text"].as_str().unwrap().contains("did not advertise roots"), "{v}");
    let records = forwarded_at_least(&al, 2);
    assert!(records.iter().filter(|r| r["outcome"] == "refused").count() >= 2, "{records:?}");
}

#[test]
fn log_messages_reach_the_caller_at_the_level_it_set() {
    let (_fx, al) = start();
    let v = client(
        &format!("{}/mcp", al.url),
        &[
            "--set-level",
            "info",
            "--call",
            "fx__log",
            r#"{"message":"first","level":"info"}"#,
            "--set-level",
            "error",
            "--call",
            "fx__log",
            r#"{"message":"filtered","level":"info"}"#,
            "--call",
            "fx__log",
            r#"{"message":"severe","level":"critical"}"#,
            "--wait",
            "500",
        ],
    );
    // The upstream was asked for the level.
    assert_eq!(step(&v, 1)["result"]["text"], "logged (level info)", "{v}");
    let messages: Vec<&Value> =
        v["notifications"].as_array().unwrap().iter().filter(|n| n["method"] == "notifications/message").collect();
    let data: Vec<&str> = messages.iter().map(|m| m["params"]["data"].as_str().unwrap()).collect();
    assert_eq!(data, ["first", "severe"], "{v}");
}

#[test]
fn a_subscription_update_reaches_the_subscriber_and_unsubscribing_ends_it_upstream() {
    let (_fx, al) = start();
    let v = client(
        &format!("{}/mcp", al.url),
        &[
            "--subscribe",
            "fixture://note",
            "--call",
            "fx__touch",
            r#"{"uri":"fixture://note"}"#,
            "--wait",
            "500",
            "--unsubscribe",
            "fixture://note",
            "--call",
            "fx__touch",
            r#"{"uri":"fixture://note"}"#,
        ],
    );
    assert_eq!(step(&v, 0)["ok"], true, "{v}");
    assert_eq!(step(&v, 1)["result"]["text"], "notified", "{v}");
    let updates: Vec<&Value> = v["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["method"] == "notifications/resources/updated")
        .collect();
    assert_eq!(updates.len(), 1, "{v}");
    assert_eq!(updates[0]["params"]["uri"], "fixture://note", "{v}");
    // The last subscriber left, so airlock ended its subscription at the upstream.
    assert_eq!(step(&v, 4)["result"]["text"], "not subscribed", "{v}");
}

/// Attack: an upstream must not reach another session's client. While two sessions have calls
/// at the same stdio upstream, airlock cannot tell whose call a request belongs to, so it
/// refuses it rather than guess; the bystander's client is never asked.
#[test]
fn an_upstream_request_that_could_be_for_either_of_two_sessions_reaches_neither() {
    let (_fx, al) = start();
    let url = format!("{}/mcp", al.url);
    let bystander = std::thread::spawn(move || client(&url, &["--call", "fx__wait", r#"{"ms":4000}"#]));
    let v = client(
        &format!("{}/mcp", al.url),
        &["--wait", "1500", "--call", "fx__sample", r#"{"prompt":"secret"}"#, "--call", "fx__log", "{}"],
    );
    let b = bystander.join().unwrap();
    assert_eq!(step(&b, 0)["result"]["text"], "waited", "{b}");
    assert_eq!(requests(&b, "sampling/createMessage"), 0, "{b}");
    assert_eq!(notified(&b, "notifications/message"), 0, "{b}");
    assert_eq!(step(&v, 1)["result"]["is_error"], true, "{v}");
    assert!(step(&v, 1)["result"]["text"].as_str().unwrap().contains("several sessions"), "{v}");
    assert_eq!(requests(&v, "sampling/createMessage"), 0, "{v}");
}

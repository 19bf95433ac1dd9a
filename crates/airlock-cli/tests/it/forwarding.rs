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

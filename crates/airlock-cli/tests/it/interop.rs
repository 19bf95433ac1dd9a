//! Interop with independently written MCP software, installed by tests/interop/install.sh:
//! the official Python SDK (`mcp` 2.3.0, default `auto` mode and `legacy` mode), the TypeScript
//! SDK (1.32), and the MCP Inspector CLI — each connecting to airlock's `/mcp` in front of two
//! real upstreams (server-everything and server-filesystem over stdio).

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

fn start() -> (Fixture, Airlock, PathBuf) {
    let bin = interop_dir().join("node_modules/.bin");
    let files = tempfile::tempdir().unwrap().keep();
    std::fs::write(files.join("notes.txt"), "interop notes").unwrap();
    let extra = format!(
        "\n[[upstreams]]\nname = \"every\"\ncommand = \"{}\"\n\n[[upstreams]]\nname = \"fs\"\ncommand = \"{}\"\nargs = [\"{}\"]\n",
        require(bin.join("mcp-server-everything")).display(),
        require(bin.join("mcp-server-filesystem")).display(),
        files.display()
    );
    let policy = format!(
        "{POLICY}\ndeny contains {{\"rule\": \"FS9\", \"msg\": \"no writes through interop clients\"}} if input.action.name == \"write_file\"\n"
    );
    let fx = Fixture::with_extra(&policy, &extra);
    let al = fx.start();
    (fx, al, files)
}

/// Runs a client and parses the JSON object on its last stdout line.
fn client_json(cmd: Command) -> Value {
    client_output(cmd).0
}

/// Runs a client: the JSON object on its last stdout line, and what it wrote to stderr.
fn client_output(mut cmd: Command) -> (Value, String) {
    let out = cmd.output().expect("run client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "client failed: {stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    let v = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (v, stderr)
}

fn python() -> Command {
    let mut cmd = Command::new(require(interop_dir().join(".venv/bin/python")));
    cmd.arg(interop_dir().join("clients/py_client.py"));
    cmd
}

fn check_listing_and_calls(v: &Value, files: &std::path::Path) {
    let tools: Vec<&str> = v["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(tools.contains(&"every__echo") && tools.contains(&"fs__read_text_file"), "{tools:?}");
    assert_eq!(v["server"]["name"], "airlock");
    let calls = v["calls"].as_array().unwrap();
    assert_eq!(calls[0]["is_error"], false, "{v}");
    assert!(calls[0]["text"].as_str().unwrap().contains("interop hello"), "{v}");
    assert_eq!(calls[1]["is_error"], false, "{v}");
    assert!(calls[1]["text"].as_str().unwrap().contains("interop notes"), "{v}");
    assert_eq!(calls[2]["is_error"], true, "{v}");
    assert!(calls[2]["text"].as_str().unwrap().contains("[FS9]"), "{v}");
    assert!(!files.join("written.txt").exists(), "a denied write reached the filesystem");
}

fn call_args(files: &std::path::Path) -> Vec<String> {
    let read = serde_json::json!({"path": files.join("notes.txt")}).to_string();
    let write = serde_json::json!({"path": files.join("written.txt"), "content": "x"}).to_string();
    vec![
        "--list".into(),
        "--call".into(),
        "every__echo".into(),
        r#"{"message": "interop hello"}"#.into(),
        "--call".into(),
        "fs__read_text_file".into(),
        read,
        "--call".into(),
        "fs__write_file".into(),
        write,
    ]
}

#[test]
fn python_sdk_in_default_mode_and_legacy_mode() {
    let (_fx, al, files) = start();
    for mode in ["auto", "legacy"] {
        let mut cmd = python();
        cmd.args(["--url", &format!("{}/mcp", al.url), "--token", BOT, "--mode", mode]).args(call_args(&files));
        let (v, stderr) = client_output(cmd);
        check_listing_and_calls(&v, &files);
        // Its `DELETE /mcp` on close gets the `200` it expects.
        assert!(!stderr.contains("Session termination failed"), "{mode}: {stderr}");
        // airlock offers only versions that use `initialize`, so `auto` falls back to it.
        assert_eq!(v["protocol_version"], "2025-11-25", "{mode}: {v}");
    }
}

#[test]
fn typescript_sdk() {
    let (_fx, al, files) = start();
    let mut cmd = Command::new("node");
    cmd.arg(require(interop_dir().join("clients/ts_client.mjs")))
        .args(["--url", &format!("{}/mcp", al.url), "--token", BOT])
        .args(call_args(&files));
    let v = client_json(cmd);
    check_listing_and_calls(&v, &files);
}

#[test]
fn inspector_cli_lists_and_calls_with_a_bearer_header() {
    let (_fx, al, _files) = start();
    let node = require(interop_dir().join("node_modules/.bin/node"));
    let inspector = require(interop_dir().join("node_modules/.bin/mcp-inspector"));
    let url = format!("{}/mcp", al.url);
    let auth = format!("Authorization: Bearer {BOT}");
    let run = |extra: &[&str]| {
        let out = Command::new(&node)
            .arg(&inspector)
            .args(["--cli", &url, "--transport", "http", "--header", &auth])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let listed = run(&["--method", "tools/list"]);
    assert!(listed["tools"].as_array().unwrap().iter().any(|t| t["name"] == "every__echo"));
    let called = run(&["--method", "tools/call", "--tool-name", "every__echo", "--tool-arg", "message=inspected"]);
    assert_eq!(called["content"][0]["text"], "Echo: inspected");
}

#[test]
fn python_stdio_client_through_airlock_connect() {
    let (_fx, al, files) = start();
    let mut cmd = python();
    // `--stdio-arg=…` so that argparse takes `--url` as a value.
    cmd.args(["--stdio-command", airlock_bin(), "--stdio-arg=connect", "--stdio-arg=--url"])
        .arg(format!("--stdio-arg={}/mcp", al.url))
        .args(["--stdio-env", &format!("AIRLOCK_TOKEN={BOT}")])
        .args(["--stdio-env", &format!("PATH={}", std::env::var("PATH").unwrap_or_default())])
        .args(call_args(&files));
    let v = client_json(cmd);
    check_listing_and_calls(&v, &files);
}

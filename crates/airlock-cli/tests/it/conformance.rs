//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, server mode, every
//! active scenario) run against airlock: the suite talks to a virtual server with
//! `prefix = false` in front of one streamable-HTTP upstream that implements what the scenarios
//! call for (tests/interop/fixtures/conformance_upstream.mjs, written with the official
//! TypeScript SDK). The suite cannot send a bearer token, so a small shim
//! (tests/interop/conformance_shim.mjs) adds it on the way to airlock.
//!
//! Every scenario must pass, except those listed in [`EXPECTED_FAILURES`], each with its reason
//! in docs/mcp.md ("Conformance").

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::common::*;
use serde_json::Value;

/// Scenarios that may fail through airlock, and why (docs/mcp.md, "Conformance"):
/// `tools-call-with-logging` passes on an idle machine, but log messages travel on the client's
/// standalone GET stream (rmcp routes only progress and cancellation to a call's own stream), and
/// a client under load may not have that stream open when the first messages go out.
const EXPECTED_FAILURES: &[&str] = &["tools-call-with-logging"];

fn interop() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

fn peer(path: &str) -> PathBuf {
    let path = interop().join(path);
    assert!(path.exists(), "{} is missing: run tests/interop/install.sh (scripts/test.sh does)", path.display());
    path
}

/// A Node helper that prints `LISTENING <port>` and exits when its stdin closes: killed and
/// reaped on drop either way.
struct Helper {
    child: Child,
    port: u16,
}

impl Helper {
    fn start(script: &str, args: &[&str]) -> Helper {
        let mut child = Command::new("node")
            .arg(peer(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read LISTENING line");
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{script} did not say where it listens: {line:?}"));
        Helper { child, port }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_official_conformance_suite_passes_through_airlock() {
    let upstream = Helper::start("fixtures/conformance_upstream.mjs", &["--port", "0"]);
    let extra = format!(
        "\n[[upstreams]]\nname = \"conf\"\nurl = \"http://127.0.0.1:{}/mcp\"\ntimeout_ms = 20000\n\n\
         [[servers]]\nname = \"conformance\"\nupstreams = [\"conf\"]\nprefix = false\n",
        upstream.port
    );
    let fx = Fixture::with_extra(POLICY, &extra);
    let al = fx.start();
    let target = al.url.clone();
    let shim = Helper::start("conformance_shim.mjs", &["--target", &target, "--token", BOT]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(al.wait_for_upstream("conf"));

    let out = Command::new("node")
        .arg(peer("clients/conformance.mjs"))
        .arg(format!("http://127.0.0.1:{}/mcp/conformance", shim.port))
        .args(["--timeout", "600"])
        .output()
        .expect("run the conformance suite");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let failures: Vec<&str> = report["failures"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let unexpected: Vec<&&str> = failures.iter().filter(|f| !EXPECTED_FAILURES.contains(f)).collect();
    assert!(unexpected.is_empty(), "scenarios failed through airlock: {unexpected:?}\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
    let passed = report["passed"].as_u64().unwrap();
    assert!(
        passed >= 30 - EXPECTED_FAILURES.len() as u64,
        "only {passed} of the 30 active scenarios passed:\n{stdout}"
    );
    drop(shim);
    drop(upstream);
}

/// airlock keeps its connections to a streamable-HTTP upstream alive: thirty calls reach the
/// upstream over a handful of TCP connections, not one each (rmcp's default client opens a new
/// one per call, leaving a socket in `TIME-WAIT` per call).
#[tokio::test]
async fn an_http_upstream_is_called_over_kept_alive_connections() {
    let upstream = Helper::start("fixtures/conformance_upstream.mjs", &["--port", "0"]);
    let extra = format!(
        "\n[guards]\nloop_repeats = 0\n\n[[upstreams]]\nname = \"conf\"\nurl = \"http://127.0.0.1:{}/mcp\"\n",
        upstream.port
    );
    let fx = Fixture::with_extra(POLICY, &extra);
    let al = fx.start();
    al.wait_for_upstream("conf").await;
    let s = al.session(BOT).await;
    for _ in 0..30 {
        let r = al.act(BOT, &s, "conf__test_simple_text", serde_json::json!({})).await;
        assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    }
    let r = al.act(BOT, &s, "conf__connection_count", serde_json::json!({})).await;
    let text = r.body["result"]["output"]["content"][0]["text"].as_str().unwrap_or_default().to_string();
    let connections: u32 = text.parse().unwrap_or_else(|_| panic!("no count: {}", r.body));
    assert!(connections <= 6, "31 calls took {connections} connections to the upstream");
    drop(upstream);
}

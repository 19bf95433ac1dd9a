//! A guard against the ~40 ms step per call on keep-alive connections coming back (Nagle's
//! algorithm meeting the client's delayed ACK: an answer written in several small pieces, the
//! last held back until the client acknowledges). It uses the official TypeScript SDK on one
//! keep-alive connection, the way most MCP clients talk to airlock. The margin is wide on
//! purpose: 50 calls must take less than a second in all, where the bug made them take ~2 s;
//! the real figures live in the benchmark (bench/, docs/BENCHMARKS.md), not here.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use serde_json::Value;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

#[tokio::test]
async fn fifty_calls_from_the_typescript_sdk_on_one_connection_take_under_a_second() {
    let bin = interop_dir().join("node_modules/.bin");
    let everything = bin.join("mcp-server-everything");
    assert!(everything.exists(), "{} is missing: run tests/interop/install.sh", everything.display());
    // No loop detection or rate limit: the same call 53 times is the point here.
    let extra = format!(
        "\n[guards]\nloop_repeats = 0\nactions_per_minute = 0\n\n[[upstreams]]\nname = \"every\"\ncommand = \"{}\"\n",
        everything.display()
    );
    let fx = Fixture::with_extra(POLICY, &extra);
    let al = fx.start();
    al.wait_for_upstream("every").await;
    let out = Command::new("node")
        .arg(interop_dir().join("clients/ts_latency.mjs"))
        .args(["--url", &format!("{}/mcp", al.url), "--token", BOT, "--tool", "every__echo"])
        .args(["--args", r#"{"message": "ping"}"#, "--calls", "50", "--warmup", "3"])
        .output()
        .expect("run the TypeScript client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(v["errors"], 0, "{v}");
    let total = v["total_ms"].as_f64().unwrap();
    assert!(total < 20.0 * 50.0, "50 sequential calls took {total} ms (p50 {} ms): {v}", v["p50_ms"]);
    // Every call was decided and journaled.
    let sessions = al.get("/v1/sessions", ADMIN).await;
    let sid = sessions.body["sessions"][0]["id"].as_str().unwrap().to_string();
    let session = al.get(&format!("/v1/sessions/{sid}"), ADMIN).await;
    let actions = session.body["actions"].as_array().map_or(0, Vec::len);
    assert_eq!(actions, 53, "every call is an action of the session");
}

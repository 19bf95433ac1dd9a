//! `tools/call` through airlock against calling the same upstream directly, in one run.
//!
//! The upstream is `@modelcontextprotocol/server-everything` (its `echo` tool) over stdio,
//! installed by tests/interop/install.sh. "Direct" is an MCP client (rmcp) talking to its own
//! child process; "through airlock" is the same client talking to `airlock serve` over
//! streamable HTTP, with airlock's own stdio connection to the same server, every call passing
//! the pipeline and the durable journal (policy: allow everything).
//!
//!     bench/mcp_overhead.sh        (or: cargo bench -p airlock-cli --bench mcp_overhead)

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};

type Client = Arc<RunningService<RoleClient, ClientConfig>>;

fn info() -> ClientConfig {
    ClientConfig::new(ClientCapabilities::default(), Implementation::new("airlock-bench", "1"))
        .with_protocol_version(ProtocolVersion::V_2025_06_18)
}

async fn echo(c: &Client, n: u64) {
    let mut args = serde_json::Map::new();
    args.insert("message".into(), serde_json::json!(format!("bench {n}")));
    let r = c.call_tool(CallToolRequestParams::new("every__echo".replace("every__", "")).with_arguments(args)).await;
    assert!(r.is_ok());
}

async fn echo_via(c: &Client, name: &str, n: u64) {
    let mut args = serde_json::Map::new();
    args.insert("message".into(), serde_json::json!(format!("bench {n}")));
    let r = c.call_tool(CallToolRequestParams::new(name.to_string()).with_arguments(args)).await.unwrap();
    assert_ne!(r.is_error, Some(true));
}

async fn measure(c: &Client, tool: &str, seconds: u64) -> (Histogram<u64>, f64, f64) {
    // Sequential: latency.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        echo_via(c, tool, n).await;
        hist.record(t.elapsed().as_micros().max(1) as u64).unwrap();
        n += 1;
    }
    let sequential = n as f64 / start.elapsed().as_secs_f64();
    // 8 concurrent callers: throughput.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let c = c.clone();
        let tool = tool.to_string();
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while start.elapsed() < Duration::from_secs(seconds) {
                echo_via(&c, &tool, w * 1_000_000 + k).await;
                k += 1;
            }
            k
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    (hist, sequential, total as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let _ = echo; // keep the helper for ad-hoc runs
    airlock_mcp::ensure_crypto_provider();
    let seconds: u64 = std::env::var("AIRLOCK_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let everything = root.join("tests/interop/node_modules/.bin/mcp-server-everything");
    assert!(everything.exists(), "run tests/interop/install.sh first");

    // Direct.
    let direct: Client = Arc::new(
        info().serve(TokioChildProcess::new(tokio::process::Command::new(&everything)).unwrap()).await.unwrap(),
    );

    // Through airlock.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/allow.rego"), "package airlock\n\ndeny contains \"never\" if false\n")
        .unwrap();
    let token = "bench-token";
    let hash = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[policy]\ndir = \"policies\"\n\
         [guards]\nactions_per_minute = 0\nloop_repeats = 0\n\
         [[agents]]\nid = \"bench\"\ntoken = \"sha256:{hash}\"\nowner = \"bench\"\ntier = \"autonomous\"\n\
         [[upstreams]]\nname = \"every\"\ncommand = \"{}\"\n",
        everything.display()
    );
    std::fs::write(dir.path().join("airlock.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["serve", "--config"])
        .arg(dir.path().join("airlock.toml"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("airlock listening on ").unwrap().to_string();
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{url}/mcp")).auth_header(token);
    let via: Client = Arc::new(info().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap());

    // Warm up both paths.
    for n in 0..50 {
        echo_via(&direct, "echo", n).await;
        echo_via(&via, "every__echo", n).await;
    }
    let (dh, dseq, dpar) = measure(&direct, "echo", seconds).await;
    let (ah, aseq, apar) = measure(&via, "every__echo", seconds).await;

    println!(
        "\ntools/call echo, {seconds}s per measurement ({} cores)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("{:>16} {:>9} {:>9} {:>14} {:>16}", "path", "p50", "p99", "calls/s (1)", "calls/s (8)");
    println!(
        "{:>16} {:>7}µs {:>7}µs {:>14.0} {:>16.0}",
        "direct",
        dh.value_at_quantile(0.5),
        dh.value_at_quantile(0.99),
        dseq,
        dpar
    );
    println!(
        "{:>16} {:>7}µs {:>7}µs {:>14.0} {:>16.0}",
        "through airlock",
        ah.value_at_quantile(0.5),
        ah.value_at_quantile(0.99),
        aseq,
        apar
    );
    println!(
        "ratio (airlock / direct): p50 {:.2}x, p99 {:.2}x, throughput(1) {:.2}x, throughput(8) {:.2}x",
        ah.value_at_quantile(0.5) as f64 / dh.value_at_quantile(0.5) as f64,
        ah.value_at_quantile(0.99) as f64 / dh.value_at_quantile(0.99) as f64,
        aseq / dseq,
        apar / dpar
    );
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

//! The decision path with the durable journal: decisions per second at 1, 8 and 64 concurrent
//! requesters, latency percentiles, and a policy-only baseline measured in the same run.
//!
//!     cargo bench -p airlock-server --bench decision
//!
//! Each requester has its own session (the per-session lock serialises one session's actions,
//! as it must) and sends calls with distinct arguments, so every call is a new decision:
//! guards, Rego policy, tier floor, and a durable journal commit (WAL, synchronous=FULL) shared
//! with other requesters through group commit. 90 % of calls are allowed, 10 % denied.
//! Set `AIRLOCK_BENCH_SECONDS` to change the length of the percentile runs (default 3).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_policy::{Options, Policy};
use airlock_server::Config;
use airlock_server::config::AgentConfig;
use airlock_server::engine::{ActionRequest, Engine};
use airlock_store::{SqliteOptions, SqliteStore, Store};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use hdrhistogram::Histogram;
use serde_json::json;

const POLICY: &str = r#"package airlock

import rego.v1

deny contains {"rule": "FW001", "msg": "no SSH to the world"} if {
    input.action.tool == "firewall.open"
    input.action.arguments.cidr == "0.0.0.0/0"
    input.action.arguments.port in {22, 3389}
}

require_approval contains {"rule": "NP001", "msg": "big scale-up", "groups": ["sre"]} if {
    input.action.tool == "nodepool.scale"
    input.action.arguments.count > 1000000
}

cost_usd := input.action.arguments.count * 0.01 if input.action.tool == "nodepool.scale"
"#;

struct Setup {
    _dir: tempfile::TempDir,
    engine: Engine,
    agent: AgentConfig,
    store: Arc<SqliteStore>,
    policy: Policy,
}

fn setup(rt: &tokio::runtime::Runtime) -> Setup {
    setup_with(rt, "")
}

fn setup_with(rt: &tokio::runtime::Runtime, extra_toml: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/main.rego"), POLICY).unwrap();
    let toml = "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[policy]\ndir = \"policies\"\n\
                [guards]\nactions_per_minute = 0\nloop_repeats = 0\n\
                [[agents]]\nid = \"bench\"\ntoken = \"env:BENCH_TOKEN\"\nowner = \"bench\"\ntier = \"autonomous\"\n";
    std::fs::write(dir.path().join("airlock.toml"), format!("{toml}{extra_toml}")).unwrap();
    let env = BTreeMap::from([("BENCH_TOKEN".to_string(), "t".to_string())]);
    let config = Config::load_with_env(&dir.path().join("airlock.toml"), &env).unwrap();
    let policy =
        Policy::load(&config.policy.dir, &Options { timeout: config.policy.timeout, coverage: false }).unwrap();
    let store =
        Arc::new(SqliteStore::open(&config.server.data_dir.join("journal.db"), SqliteOptions::default()).unwrap());
    let agent = config.agents[0].clone();
    let dyn_store: Arc<dyn Store> = store.clone();
    let engine = rt.block_on(Engine::start(Arc::new(config), policy.clone(), dyn_store)).unwrap();
    Setup { _dir: dir, engine, agent, store, policy }
}

fn request(n: u64) -> ActionRequest {
    let (tool, arguments) = if n % 10 == 9 {
        ("firewall.open", json!({"port": 22, "cidr": "0.0.0.0/0", "n": n}))
    } else {
        ("nodepool.scale", json!({"pool": "web", "count": n % 50 + 1, "n": n}))
    };
    ActionRequest {
        tool: tool.into(),
        arguments,
        justification: "benchmark".into(),
        idempotency_key: None,
        reported_annotations: None,
        traceparent: None,
        mcp_session: None,
    }
}

/// Runs `total` decisions from `concurrency` requesters; returns per-decision latencies.
async fn run(s: &Setup, concurrency: usize, total: u64, seq: &Arc<std::sync::atomic::AtomicU64>) -> Vec<Duration> {
    let per = total.div_ceil(concurrency as u64);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let engine = s.engine.clone();
        let agent = s.agent.clone();
        let seq = seq.clone();
        tasks.push(tokio::spawn(async move {
            let session = engine.open_session(&agent, "bench".into(), BTreeMap::new(), None).await.unwrap();
            let mut lat = Vec::with_capacity(per as usize);
            for _ in 0..per {
                let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let t = Instant::now();
                engine.submit(&agent, &session.id, request(n)).await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn criterion_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let s = setup(&rt);
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let mut g = c.benchmark_group("policy_only");
    g.throughput(Throughput::Elements(1));
    let input = json!({
        "agent": {"id": "bench", "owner": "bench", "tier": "autonomous", "labels": {}},
        "session": {"id": "ses", "task": "bench", "labels": {}, "actions": 1, "failures": 0, "spent_usd": 0.0},
        "action": {"tool": "nodepool.scale", "upstream": null, "name": "nodepool.scale",
                   "arguments": {"pool": "web", "count": 7}, "annotations": {}, "justification": "b", "digest": "sha256:x"},
        "now": "2026-11-24T00:00:00Z"
    });
    g.bench_function("evaluate", |b| b.iter(|| s.policy.evaluate(&input)));
    g.finish();

    let mut g = c.benchmark_group("decision_durable");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    for concurrency in [1usize, 8, 64] {
        let batch = (concurrency as u64 * 20).max(100);
        g.throughput(Throughput::Elements(batch));
        g.bench_with_input(BenchmarkId::from_parameter(concurrency), &concurrency, |b, &c| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    rt.block_on(run(&s, c, batch, &seq));
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

/// Fixed-length runs that report throughput and latency percentiles (criterion reports neither
/// for concurrent requesters).
fn percentiles() {
    let seconds: u64 = std::env::var("AIRLOCK_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let s = setup(&rt);
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(1_000_000_000));
    println!(
        "\ndecision_durable percentiles ({seconds}s per level, {} cores)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!(
        "{:>11} {:>12} {:>9} {:>9} {:>9} {:>11}",
        "requesters", "decisions/s", "p50", "p99", "p99.9", "mean batch"
    );
    for concurrency in [1usize, 8, 64] {
        let before = s.store.stats();
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let started = Instant::now();
        let mut done = 0u64;
        while started.elapsed() < Duration::from_secs(seconds) {
            let lat = rt.block_on(run(&s, concurrency, concurrency as u64 * 50, &seq));
            done += lat.len() as u64;
            for l in lat {
                hist.record(l.as_micros().max(1) as u64).unwrap();
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let after = s.store.stats();
        let batches = (after.batches - before.batches).max(1);
        let batch = (after.commits - before.commits) as f64 / batches as f64;
        println!(
            "{:>11} {:>12.0} {:>7}µs {:>7}µs {:>7}µs {:>11.1}",
            concurrency,
            done as f64 / elapsed,
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.value_at_quantile(0.999),
            batch
        );
    }
}

/// Decision latency with an OTLP exporter configured against the same without, interleaved.
/// The exporter sends to a local sink that accepts every export.
fn tracing_overhead() {
    let seconds: u64 = std::env::var("AIRLOCK_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let endpoint = rt.block_on(async {
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(|| async { "" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    });
    let plain = setup(&rt);
    let traced = setup_with(&rt, &format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\n"));
    assert!(traced.engine.tracing().enabled());
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(2_000_000_000));
    let mut rows = Vec::new();
    for round in 0..2 {
        for (label, s) in [("off", &plain), ("on", &traced)] {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let started = Instant::now();
            let mut done = 0u64;
            while started.elapsed() < Duration::from_secs(seconds) {
                for l in rt.block_on(run(s, 8, 400, &seq)) {
                    hist.record(l.as_micros().max(1) as u64).unwrap();
                    done += 1;
                }
            }
            rows.push((
                round,
                label,
                done as f64 / started.elapsed().as_secs_f64(),
                hist.value_at_quantile(0.5),
                hist.value_at_quantile(0.99),
            ));
        }
    }
    println!("\ntracing overhead (8 requesters, {seconds}s per run, runs interleaved)");
    println!("{:>6} {:>8} {:>12} {:>9} {:>9}", "round", "tracing", "decisions/s", "p50", "p99");
    for (round, label, rate, p50, p99) in &rows {
        println!("{round:>6} {label:>8} {rate:>12.0} {p50:>7}µs {p99:>7}µs");
    }
    let med = |l: &str| {
        let mut v: Vec<u64> = rows.iter().filter(|r| r.1 == l).map(|r| r.3).collect();
        v.sort();
        v.iter().sum::<u64>() as f64 / v.len() as f64
    };
    println!("p50 with tracing / without: {:.2}", med("on") / med("off"));
    traced.engine.tracing().shutdown();
}

criterion_group!(benches, criterion_benches);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    percentiles();
    tracing_overhead();
}

//! The decision path with the durable journal: decisions per second at 1, 8 and 64 concurrent
//! requesters, latency percentiles, and a policy-only baseline measured in the same run.
//!
//!     cargo bench -p airlock-server --bench decision
//!
//! Each requester has its own session (the per-session lock serialises one session's actions,
//! as it must) and sends calls with distinct arguments, so every call is a new decision:
//! guards, Rego policy, tier floor, and a durable journal commit (WAL, synchronous=FULL) shared
//! with other requesters through group commit. 90 % of calls are allowed, 10 % denied.
//! Set `AIRLOCK_BENCH_SECONDS` to change the length of the fixed-length runs (default 3 s each).
//!
//! Every concurrency level starts on a fresh journal, so no level inherits the sessions of the
//! one before; the `journal size` table looks for per-commit costs that grow with the journal on
//! purpose. The `breakdown` table repeats the runs with the journal on tmpfs and discarded to
//! split the cost: only the disk figures are durable. CPU and bytes-written columns read Linux
//! `/proc` (zeros elsewhere). Method and figures: docs/BENCHMARKS.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_core::EventKind;
use airlock_policy::{Options, Policy};
use airlock_server::Config;
use airlock_server::config::AgentConfig;
use airlock_server::engine::{ActionRequest, Engine};
use airlock_store::{Commit, SqliteOptions, SqliteStore, Store};
use chrono::Utc;
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
    setup_journal(rt, extra_toml, Journal::Disk)
}

/// Where the journal lives. Only `Disk` is durable; the others exist to split the cost.
#[derive(Clone, Copy, PartialEq)]
enum Journal {
    /// A temporary directory on the machine's disk (the real figure).
    Disk,
    /// The same SQLite journal on tmpfs: same SQL and `write`s, but `fsync` costs nothing.
    Tmpfs,
    /// Commits are dropped unwritten: the engine's own cost without any journal.
    Discard,
}

fn setup_journal(rt: &tokio::runtime::Runtime, extra_toml: &str, journal: Journal) -> Setup {
    setup_store(rt, extra_toml, journal, SqliteOptions::default())
}

fn setup_store(rt: &tokio::runtime::Runtime, extra_toml: &str, journal: Journal, options: SqliteOptions) -> Setup {
    let dir = match journal {
        Journal::Tmpfs => tempfile::tempdir_in("/dev/shm").unwrap(),
        _ => tempfile::tempdir().unwrap(),
    };
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
    let store = Arc::new(SqliteStore::open(&config.server.data_dir.join("journal.db"), options).unwrap());
    let agent = config.agents[0].clone();
    let dyn_store: Arc<dyn Store> =
        if journal == Journal::Discard { Arc::new(Discard(store.clone())) } else { store.clone() };
    let engine = rt.block_on(Engine::start(Arc::new(config), policy.clone(), dyn_store)).unwrap();
    Setup { _dir: dir, engine, agent, store, policy }
}

/// A store that drops every commit unwritten and answers reads from an (empty) SQLite journal.
/// Not durable: it measures the decision path with the journal taken out.
struct Discard(Arc<SqliteStore>);

#[async_trait::async_trait]
impl Store for Discard {
    async fn commit(&self, _commit: Commit) -> airlock_store::Result<()> {
        Ok(())
    }
    async fn session(&self, id: &str) -> airlock_store::Result<Option<airlock_core::Session>> {
        self.0.session(id).await
    }
    async fn sessions(
        &self,
        filter: airlock_store::SessionFilter,
    ) -> airlock_store::Result<Vec<airlock_core::Session>> {
        self.0.sessions(filter).await
    }
    async fn action(&self, id: &str) -> airlock_store::Result<Option<airlock_core::Action>> {
        self.0.action(id).await
    }
    async fn session_actions(&self, session_id: &str) -> airlock_store::Result<Vec<airlock_core::Action>> {
        self.0.session_actions(session_id).await
    }
    async fn waiting_actions(&self, session_id: &str) -> airlock_store::Result<Vec<airlock_core::Action>> {
        self.0.waiting_actions(session_id).await
    }
    async fn actions_in_status(
        &self,
        status: airlock_core::ActionStatus,
    ) -> airlock_store::Result<Vec<airlock_core::Action>> {
        self.0.actions_in_status(status).await
    }
    async fn action_by_idempotency_key(
        &self,
        agent_id: &str,
        key: &str,
    ) -> airlock_store::Result<Option<airlock_core::Action>> {
        self.0.action_by_idempotency_key(agent_id, key).await
    }
    async fn approval(&self, id: &str) -> airlock_store::Result<Option<airlock_core::Approval>> {
        self.0.approval(id).await
    }
    async fn approvals(
        &self,
        status: Option<airlock_core::ApprovalStatus>,
        limit: usize,
    ) -> airlock_store::Result<Vec<airlock_core::Approval>> {
        self.0.approvals(status, limit).await
    }
    async fn approvals_due(&self, now: chrono::DateTime<Utc>) -> airlock_store::Result<Vec<airlock_core::Approval>> {
        self.0.approvals_due(now).await
    }
    async fn kill_switches(&self, active_only: bool) -> airlock_store::Result<Vec<airlock_core::KillSwitch>> {
        self.0.kill_switches(active_only).await
    }
    async fn events(&self, stream: &str) -> airlock_store::Result<Vec<airlock_store::StoredEvent>> {
        self.0.events(stream).await
    }
    async fn verify(&self) -> airlock_store::Result<airlock_store::VerifyReport> {
        self.0.verify().await
    }
    async fn policy_history(&self, limit: usize) -> airlock_store::Result<Vec<airlock_store::PolicyRecord>> {
        self.0.policy_history(limit).await
    }
    async fn breakers(&self) -> airlock_store::Result<Vec<airlock_core::limits::Breaker>> {
        self.0.breakers().await
    }
    async fn mfa_guards(&self) -> airlock_store::Result<Vec<airlock_core::vote::MfaGuard>> {
        self.0.mfa_guards().await
    }
    async fn agent_actions_since(&self, agent_id: &str, since: chrono::DateTime<Utc>) -> airlock_store::Result<u32> {
        self.0.agent_actions_since(agent_id, since).await
    }
    async fn agent_spend_since(&self, agent_id: &str, since: chrono::DateTime<Utc>) -> airlock_store::Result<f64> {
        self.0.agent_spend_since(agent_id, since).await
    }
    async fn reserved_since(
        &self,
        agent_id: &str,
        session_id: Option<&str>,
        since: chrono::DateTime<Utc>,
    ) -> airlock_store::Result<f64> {
        self.0.reserved_since(agent_id, session_id, since).await
    }
    async fn tree_head(&self) -> airlock_store::Result<(u64, [u8; 32])> {
        self.0.tree_head().await
    }
    async fn save_checkpoint(&self, size: u64, note: String, at: chrono::DateTime<Utc>) -> airlock_store::Result<()> {
        self.0.save_checkpoint(size, note, at).await
    }
    async fn notifications_due(
        &self,
        now: chrono::DateTime<Utc>,
        limit: usize,
    ) -> airlock_store::Result<Vec<airlock_store::Notification>> {
        self.0.notifications_due(now, limit).await
    }
    fn backend(&self) -> &'static str {
        "discard"
    }
    async fn ping(&self) -> airlock_store::Result<()> {
        Ok(())
    }
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
        server: None,
        plan_lease: None,
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
    drop(s);
    for concurrency in [1usize, 8, 64] {
        let s = setup(&rt);
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

/// CPU seconds used so far by the whole process and by the journal writer threads, from Linux
/// `/proc` (USER_HZ = 100, so 10 ms resolution); zeros where `/proc` is missing.
fn cpu_seconds() -> (f64, f64) {
    fn ticks(stat: &str) -> Option<u64> {
        // Fields after the command name: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    }
    let process = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| ticks(&s)).unwrap_or(0);
    let mut writer = 0;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "airlock-journal" {
            writer += std::fs::read_to_string(task.path().join("stat")).ok().and_then(|s| ticks(&s)).unwrap_or(0);
        }
    }
    (process as f64 / 100.0, writer as f64 / 100.0)
}

/// Bytes the process has passed to `write` so far (Linux `/proc/self/io`, `wchar`); zero elsewhere.
fn bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| io.lines().find_map(|l| l.strip_prefix("wchar:").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0)
}

struct Row {
    rate: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    batch: f64,
    /// Whole-process CPU per decision (µs), the benchmark's own requester tasks included.
    cpu_per_decision: f64,
    /// Writer-thread CPU per journal transaction (µs).
    writer_per_batch: f64,
    /// Share of wall time the writer thread was on a CPU.
    writer_busy: f64,
    /// Bytes handed to `write` per decision (WAL frames, mostly).
    written_per_decision: f64,
}

/// Runs `concurrency` requesters, each opening a session for every `per_session` calls, for
/// `seconds`, and reads the histogram and counters.
fn measure(
    rt: &tokio::runtime::Runtime,
    s: &Setup,
    concurrency: usize,
    per_session: u64,
    seconds: u64,
    seq: &Arc<std::sync::atomic::AtomicU64>,
) -> Row {
    let before = s.store.stats();
    let (cpu0, writer0) = cpu_seconds();
    let written0 = bytes_written();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        let lat = rt.block_on(run(s, concurrency, concurrency as u64 * per_session, seq));
        done += lat.len() as u64;
        for l in lat {
            hist.record(l.as_micros().max(1) as u64).unwrap();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu1, writer1) = cpu_seconds();
    let written = bytes_written() - written0;
    let after = s.store.stats();
    let batches = (after.batches - before.batches).max(1);
    Row {
        rate: done as f64 / elapsed,
        p50: hist.value_at_quantile(0.5),
        p99: hist.value_at_quantile(0.99),
        p999: hist.value_at_quantile(0.999),
        batch: (after.commits - before.commits) as f64 / batches as f64,
        cpu_per_decision: (cpu1 - cpu0) * 1e6 / done.max(1) as f64,
        writer_per_batch: (writer1 - writer0) * 1e6 / batches as f64,
        writer_busy: (writer1 - writer0) / elapsed,
        written_per_decision: written as f64 / done.max(1) as f64,
    }
}

fn header(first: &str) {
    println!(
        "{first:>11} {:>12} {:>9} {:>9} {:>9} {:>11} {:>14} {:>14} {:>12} {:>16}",
        "decisions/s",
        "p50",
        "p99",
        "p99.9",
        "mean batch",
        "CPU/decision",
        "writer/batch",
        "writer busy",
        "written/decision"
    );
}

fn print_row(first: &str, r: &Row) {
    println!(
        "{first:>11} {:>12.0} {:>7}µs {:>7}µs {:>7}µs {:>11.1} {:>12.0}µs {:>12.0}µs {:>11.0}% {:>14.1}kB",
        r.rate,
        r.p50,
        r.p99,
        r.p999,
        r.batch,
        r.cpu_per_decision,
        r.writer_per_batch,
        r.writer_busy * 100.0,
        r.written_per_decision / 1000.0
    );
}

fn bench_seconds() -> u64 {
    std::env::var("AIRLOCK_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

/// Fixed-length runs that report throughput and latency percentiles (criterion reports neither
/// for concurrent requesters), with the writer's CPU time per transaction.
fn percentiles() {
    let seconds = bench_seconds();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(1_000_000_000));
    println!(
        "\ndecision_durable percentiles ({seconds}s per level, fresh journal per level, {} cores)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    header("requesters");
    for concurrency in [1usize, 8, 64] {
        let s = setup(&rt);
        print_row(&concurrency.to_string(), &measure(&rt, &s, concurrency, 50, seconds, &seq));
    }
}

/// The same decisions at 8 requesters on journals already holding `n` other sessions' streams
/// (one `session.opened` event each, written straight to the store). Sessions of 10 calls here,
/// so one slow run does not overshoot the time much.
fn journal_size() {
    let seconds = bench_seconds();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(3_000_000_000));
    println!("\njournal size (8 requesters, sessions of 10 calls, {seconds}s per run)");
    header("streams");
    for streams in [0usize, 10_000, 100_000] {
        let s = setup(&rt);
        rt.block_on(async {
            for chunk in 0..streams.div_ceil(1000) {
                let mut c = Commit::default();
                for i in chunk * 1000..streams.min(chunk * 1000 + 1000) {
                    c.event(&format!("ses_old_{i:07}"), EventKind::SessionOpened, Utc::now(), json!({"task": "old"}));
                }
                s.store.commit(c).await.unwrap();
            }
        });
        print_row(&streams.to_string(), &measure(&rt, &s, 8, 10, seconds, &seq));
    }
}

/// Where the time goes at saturation: the same runs with the journal on disk, on tmpfs (no
/// fsync cost) and discarded (no journal at all). Only the first is durable.
fn breakdown() {
    let seconds = bench_seconds();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(4_000_000_000));
    println!("\nbreakdown ({seconds}s per run; only `disk` is durable)");
    header("journal");
    for concurrency in [1usize, 8, 64] {
        for (label, journal) in [("disk", Journal::Disk), ("tmpfs", Journal::Tmpfs), ("discarded", Journal::Discard)] {
            if journal == Journal::Tmpfs && !std::path::Path::new("/dev/shm").is_dir() {
                continue;
            }
            let s = setup_journal(&rt, "", journal);
            print_row(&format!("{label}/{concurrency}"), &measure(&rt, &s, concurrency, 50, seconds, &seq));
        }
    }
}

/// WAL checkpoints inside commits (SQLite's automatic ones) against a background thread,
/// interleaved rounds on fresh journals, so both sides see the same machine.
fn checkpoints() {
    let seconds = bench_seconds();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(5_000_000_000));
    println!("\nWAL checkpoints ({seconds}s per run, 3 interleaved rounds, fresh journal per run)");
    header("where/requesters");
    let mut rows: Vec<(String, usize, Row)> = Vec::new();
    for _round in 0..3 {
        for concurrency in [1usize, 8, 64] {
            for (label, background) in [("commit", false), ("thread", true)] {
                let options = SqliteOptions { background_checkpoints: background, ..SqliteOptions::default() };
                let s = setup_store(&rt, "", Journal::Disk, options);
                let row = measure(&rt, &s, concurrency, 50, seconds, &seq);
                print_row(&format!("{label}/{concurrency}"), &row);
                rows.push((label.to_string(), concurrency, row));
            }
        }
    }
    let median = |label: &str, c: usize, f: &dyn Fn(&Row) -> f64| {
        let mut v: Vec<f64> = rows.iter().filter(|r| r.0 == label && r.1 == c).map(|r| f(&r.2)).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for c in [1usize, 8, 64] {
        println!(
            "{c:>2} requesters, background / in-commit medians: throughput {:.2}, p99 {:.2}",
            median("thread", c, &|r| r.rate) / median("commit", c, &|r| r.rate),
            median("thread", c, &|r| r.p99 as f64) / median("commit", c, &|r| r.p99 as f64),
        );
    }
}

/// Decision latency and CPU with an OTLP exporter configured against the same without: several
/// interleaved rounds (`AIRLOCK_BENCH_TRACING_ROUNDS`, default 6) at 1 and 8 requesters, and the
/// median of the per-round ratios, so slow spells of a shared machine hit both sides alike. The
/// exporter sends to a local sink that accepts every export.
fn tracing_overhead() {
    let seconds = bench_seconds();
    let rounds: usize =
        std::env::var("AIRLOCK_BENCH_TRACING_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(6).max(1);
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
    println!("\ntracing overhead ({seconds}s per run, {rounds} interleaved rounds, same two journals throughout)");
    header("tracing/requesters");
    // (round, requesters, off, on)
    let mut pairs: Vec<(usize, usize, Row, Row)> = Vec::new();
    for round in 0..rounds {
        for concurrency in [1usize, 8] {
            // Alternate which side goes first, so neither always runs on a warmer machine.
            let order: [(&str, &Setup); 2] =
                if round % 2 == 0 { [("off", &plain), ("on", &traced)] } else { [("on", &traced), ("off", &plain)] };
            let mut off = None;
            let mut on = None;
            for (label, s) in order {
                let row = measure(&rt, s, concurrency, 50, seconds, &seq);
                print_row(&format!("{label}/{concurrency}"), &row);
                if label == "off" { off = Some(row) } else { on = Some(row) }
            }
            if let (Some(off), Some(on)) = (off, on) {
                pairs.push((round, concurrency, off, on));
            }
        }
    }
    let median_ratio = |c: usize, f: &dyn Fn(&Row) -> f64| {
        let mut v: Vec<f64> = pairs.iter().filter(|p| p.1 == c).map(|p| f(&p.3) / f(&p.2)).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for c in [1usize, 8] {
        println!(
            "{c} requester(s), with tracing / without, median of {rounds} rounds: p50 {:.3}, p99 {:.3}, throughput {:.3}, CPU per decision {:.3}",
            median_ratio(c, &|r| r.p50 as f64),
            median_ratio(c, &|r| r.p99 as f64),
            median_ratio(c, &|r| r.rate),
            median_ratio(c, &|r| r.cpu_per_decision),
        );
    }
    traced.engine.tracing().shutdown();
}

criterion_group!(benches, criterion_benches);

/// `AIRLOCK_BENCH_ONLY=tracing` (or `percentiles`, `journal`, `breakdown`, `checkpoints`) runs
/// only that table and skips criterion.
fn main() {
    let only = std::env::var("AIRLOCK_BENCH_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if only.is_none() {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    if wanted("percentiles") {
        percentiles();
    }
    if wanted("journal") {
        journal_size();
    }
    if wanted("breakdown") {
        breakdown();
    }
    if wanted("checkpoints") {
        checkpoints();
    }
    if wanted("tracing") {
        tracing_overhead();
    }
}

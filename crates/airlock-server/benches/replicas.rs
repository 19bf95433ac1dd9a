//! Durable decisions per second on PostgreSQL, with one replica and with three sharing one
//! database, next to SQLite, in one run: 1, 8 and 64 concurrent requesters.
//!
//!     bench/replicas.sh            # or: cargo bench -p airlock-server --bench replicas
//!
//! Each replica is an `Engine` with its own `PostgresStore` (its own pools, writer, listener and
//! leader election), in this process: what differs from separate processes is only that they
//! share its two cores' scheduler, as they would share a machine. Requesters are spread over the
//! replicas in turn; each opens a session on its replica and sends calls with distinct
//! arguments (a new session every 50 calls), so every call is a full decision: guards, Rego,
//! the session's lock in the database, and a durable commit. 90 % allowed, 10 % denied, as in
//! the `decision` bench. Every row starts on a fresh journal (a new database, or a new SQLite
//! file). `AIRLOCK_BENCH_SECONDS` sets each row's length (default 3 s). PostgreSQL is the one
//! `tests/postgres/install.sh` provides (or `AIRLOCK_TEST_PG_URL`). Figures: docs/BENCHMARKS.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use airlock_policy::{Options, Policy};
use airlock_server::Config;
use airlock_server::config::AgentConfig;
use airlock_server::engine::{ActionRequest, Engine};
use airlock_store::{PostgresOptions, PostgresStore, SqliteOptions, SqliteStore, Store};
use airlock_test_postgres::TestDatabase;
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

/// Where the journal is.
#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres { replicas: usize },
}

impl Backend {
    fn name(self) -> String {
        match self {
            Backend::Sqlite => "SQLite".into(),
            Backend::Postgres { replicas: 1 } => "PostgreSQL, 1 replica".into(),
            Backend::Postgres { replicas } => format!("PostgreSQL, {replicas} replicas"),
        }
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    _db: Option<TestDatabase>,
    engines: Vec<Engine>,
    agent: AgentConfig,
}

async fn setup(backend: Backend) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/main.rego"), POLICY).unwrap();
    let toml = "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[policy]\ndir = \"policies\"\n\
                [guards]\nactions_per_minute = 0\nsessions_per_minute = 0\nloop_repeats = 0\n\
                [[agents]]\nid = \"bench\"\ntoken = \"env:BENCH_TOKEN\"\nowner = \"bench\"\ntier = \"autonomous\"\n";
    std::fs::write(dir.path().join("airlock.toml"), toml).unwrap();
    let env = BTreeMap::from([("BENCH_TOKEN".to_string(), "t".to_string())]);
    let config = Arc::new(Config::load_with_env(&dir.path().join("airlock.toml"), &env).unwrap());
    let policy =
        Policy::load(&config.policy.dir, &Options { timeout: config.policy.timeout, coverage: false }).unwrap();
    let agent = config.agents[0].clone();
    let (db, stores): (Option<TestDatabase>, Vec<Arc<dyn Store>>) = match backend {
        Backend::Sqlite => {
            std::fs::create_dir_all(&config.server.data_dir).unwrap();
            let store =
                SqliteStore::open(&config.server.data_dir.join("journal.db"), SqliteOptions::default()).unwrap();
            (None, vec![Arc::new(store)])
        }
        Backend::Postgres { replicas } => {
            let db = TestDatabase::create().await;
            let mut stores: Vec<Arc<dyn Store>> = Vec::new();
            for _ in 0..replicas {
                // Three replicas with the default pools (2 × 16 + 2 each) would pass the test
                // server's 100 connections.
                let mut options = PostgresOptions::parse(db.url()).unwrap();
                options.max_connections = 8;
                stores.push(Arc::new(PostgresStore::open(options).await.unwrap()));
            }
            (Some(db), stores)
        }
    };
    let mut engines = Vec::new();
    for store in stores {
        engines.push(Engine::start(config.clone(), policy.clone(), store).await.unwrap());
    }
    Setup { _dir: dir, _db: db, engines, agent }
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

/// Decisions made by `requesters` for `length`, and their latencies.
async fn run(s: &Setup, requesters: usize, length: Duration) -> (u64, Histogram<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for k in 0..requesters {
        let engine = s.engines[k % s.engines.len()].clone();
        let agent = s.agent.clone();
        let (stop, seq) = (stop.clone(), seq.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Histogram::<u64>::new(3).unwrap();
            let mut made = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let session = engine.open_session(&agent, "bench".into(), BTreeMap::new(), None).await.unwrap();
                for _ in 0..50 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    engine.submit(&agent, &session.id, request(n)).await.unwrap();
                    let _ = lat.record(t.elapsed().as_micros() as u64);
                    made += 1;
                }
            }
            (made, lat)
        }));
    }
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut all = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        let (made, lat) = t.await.unwrap();
        total += made;
        all.add(lat).unwrap();
    }
    (total, all)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported here.
    let seconds: u64 = std::env::var("AIRLOCK_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let length = Duration::from_secs(seconds);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let backends = [Backend::Sqlite, Backend::Postgres { replicas: 1 }, Backend::Postgres { replicas: 3 }];
    let levels = [1usize, 8, 64];
    let mut sqlite = [0f64; 3];
    println!("durable decisions per second, {seconds} s per row");
    println!("| journal | requesters | decisions/s | × SQLite | p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    for backend in backends {
        for (i, &requesters) in levels.iter().enumerate() {
            let (made, lat) = rt.block_on(async {
                let s = setup(backend).await;
                let result = run(&s, requesters, length).await;
                drop(s);
                result
            });
            let rate = made as f64 / length.as_secs_f64();
            if matches!(backend, Backend::Sqlite) {
                sqlite[i] = rate;
            }
            let ratio = if sqlite[i] > 0.0 { rate / sqlite[i] } else { 0.0 };
            println!(
                "| {} | {requesters} | {rate:.0} | {ratio:.2} | {:.2} ms | {:.2} ms |",
                backend.name(),
                lat.value_at_quantile(0.5) as f64 / 1000.0,
                lat.value_at_quantile(0.99) as f64 / 1000.0,
            );
        }
    }
}

//! `airlock audit verify` over a journal of 100,000 events: hash chains plus a signed
//! checkpoint over all of them. Prints the median of five runs.
//!
//!     cargo bench -p airlock-server --bench audit

use std::time::{Duration, Instant};

use airlock_core::EventKind;
use airlock_store::{Commit, SqliteOptions, SqliteStore, Store};
use chrono::Utc;
use serde_json::json;

fn main() {
    let events: usize = std::env::var("AIRLOCK_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let build = Instant::now();
    rt.block_on(async {
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        // 1,000 sessions of 100 events, payloads shaped like real decisions.
        for chunk in 0..events / 1000 {
            let mut c = Commit::default();
            for i in 0..1000 {
                let n = chunk * 1000 + i;
                let stream = format!("ses_{:06}", n % 1000);
                c.event(
                    &stream,
                    EventKind::ActionDecided,
                    Utc::now(),
                    json!({"action_id": format!("act_{n}"), "status": "executing",
                           "decision": {"effect": "allow", "reasons": [], "risk": "low", "policy_revision": "sha256:abc"},
                           "input": {"action": {"tool": "nodepool.scale", "arguments": {"pool": "web", "count": n % 50}}}}),
                );
            }
            store.commit(c).await.unwrap();
        }
        let (size, root) = store.tree_head().await.unwrap();
        let key = ed25519_note(size, &root);
        store.save_checkpoint(size, key.0, Utc::now()).await.unwrap();
        std::fs::write(dir.path().join("pub"), key.1).unwrap();
    });
    println!("built a journal of {events} events in {:.1}s", build.elapsed().as_secs_f64());
    let public = std::fs::read_to_string(dir.path().join("pub")).unwrap();
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let chains = SqliteStore::verify_file(&path).unwrap();
        assert!(chains.ok() && chains.events as usize == events);
        let journal = airlock_store::JournalReader::Sqlite(path.clone());
        let cps = rt.block_on(airlock_server::audit::verify_checkpoints(&journal, &public)).unwrap();
        assert!(cps.problem.is_none() && cps.checked == 1);
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "audit verify ({events} events, 1 checkpoint): median {:.2}s, min {:.2}s, max {:.2}s",
        times[2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[4].as_secs_f64()
    );
}

/// A checkpoint note and its public key, signed the way `airlock serve` signs them.
fn ed25519_note(size: u64, root: &[u8; 32]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[server]\ndata_dir = \"data\"\n[policy]\ndir = \".\"\n";
    std::fs::write(dir.path().join("airlock.toml"), toml).unwrap();
    std::fs::write(dir.path().join("p.rego"), "package airlock\n\ndeny contains \"never\" if false\n").unwrap();
    let config = airlock_server::Config::load(&dir.path().join("airlock.toml")).unwrap();
    let signer = airlock_server::audit::CheckpointSigner::load_or_create(&config).unwrap();
    (signer.note(size, root), signer.public_key())
}

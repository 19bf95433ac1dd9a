//! `airlock replay`: re-evaluate recorded decisions against a candidate policy.
//!
//! Every decision that reached policy has its exact input in the journal (`action.decided`
//! events carry `input`, and `facts`: the tier, the catalog price, budgets and spend at the
//! time), so a replay runs the same pipeline steps as the live decision
//! (`airlock_core::pipeline::conclude`: tier floor and budgets included) with other Rego.
//! Decisions made by a host guard before policy (kill switch, tier, rate limit, …) are counted
//! but not re-evaluated: policy cannot change them.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use airlock_core::Effect;
use airlock_core::pipeline::{self, PolicyAnswer, PolicyFacts};
use airlock_policy::{Options, Policy};
use airlock_server::Config;
use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

use crate::local::parse_since;
use crate::{ReplayArgs, ReplayTarget, output};

#[derive(Debug, Serialize)]
struct Flip {
    action_id: String,
    session_id: String,
    tool: String,
    from: String,
    to: String,
    rules_added: Vec<String>,
    rules_removed: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    candidate_revision: String,
    actions: usize,
    replayed: usize,
    decided_by_guard: usize,
    unchanged: usize,
    flips: BTreeMap<String, usize>,
    rules: BTreeMap<String, BTreeMap<String, usize>>,
    tightening: usize,
    examples: Vec<Flip>,
}

fn effect_of(v: &Value) -> String {
    v.get("effect").and_then(Value::as_str).unwrap_or("unknown").to_string()
}

fn rules_of(v: &Value) -> Vec<String> {
    let mut r: Vec<String> = v
        .get("reasons")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.get("rule").and_then(Value::as_str).map(String::from)).collect())
        .unwrap_or_default();
    r.sort();
    r.dedup();
    r
}

pub async fn run(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let Some(dir) = &args.policy else {
        anyhow::bail!("name the candidate policy with `--policy DIR`");
    };
    let config = Config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let policy = Policy::load(
        dir,
        &Options { timeout: config.policy.timeout.max(Duration::from_millis(500)), coverage: false },
    )?;
    let default_ttl = config.approvals.default_ttl_seconds;
    let journal = airlock_server::journal::reader(&config).await?;
    let session = args.target.as_ref().map(|ReplayTarget::Session { id }| id.clone());
    let since = if session.is_some() { chrono::DateTime::UNIX_EPOCH } else { parse_since(&args.since)? };
    let events = journal.events_since(&since).await.context("cannot read the journal")?;
    let mut tools: BTreeMap<String, String> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == "action.requested") {
        if let (Some(id), Some(tool)) = (e.payload["action_id"].as_str(), e.payload["tool"].as_str()) {
            tools.insert(id.to_string(), tool.to_string());
        }
    }
    let decided: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "action.decided")
        .filter(|e| session.as_deref().is_none_or(|s| e.stream == s))
        .collect();

    let bar = (std::io::stderr().is_terminal() && decided.len() > 500 && !args.json).then(|| {
        let b = indicatif::ProgressBar::new(decided.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} replaying {pos}/{len} decisions [{bar:40}] {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut summary =
        Summary { candidate_revision: policy.revision().to_string(), actions: decided.len(), ..Default::default() };
    for e in decided {
        if let Some(b) = &bar {
            b.inc(1);
        }
        let old = &e.payload["decision"];
        let input = &e.payload["input"];
        if input.is_null() {
            summary.decided_by_guard += 1;
            continue;
        }
        // Decisions journaled before the facts were recorded: what the input says (no budgets).
        let facts = match serde_json::from_value::<PolicyFacts>(e.payload["facts"].clone()) {
            Ok(facts) => facts,
            Err(_) => PolicyFacts::from_recorded_input(input, default_ttl).map_err(|msg| {
                anyhow::anyhow!("cannot replay action {}: {msg}", e.payload["action_id"].as_str().unwrap_or("?"))
            })?,
        };
        summary.replayed += 1;
        let eval = policy.evaluate(input);
        let answer =
            PolicyAnswer { output: eval.output, revision: policy.revision().to_string(), eval_us: eval.eval_us };
        let new = pipeline::conclude(answer, &facts);
        let new_v = serde_json::to_value(&new)?;
        let (from, to) = (effect_of(old), effect_of(&new_v));
        let (old_rules, new_rules) = (rules_of(old), rules_of(&new_v));
        if from == to && old_rules == new_rules {
            summary.unchanged += 1;
            continue;
        }
        *summary.flips.entry(format!("{from} -> {to}")).or_default() += 1;
        let added: Vec<String> = new_rules.iter().filter(|r| !old_rules.contains(r)).cloned().collect();
        let removed: Vec<String> = old_rules.iter().filter(|r| !new_rules.contains(r)).cloned().collect();
        for r in &added {
            *summary.rules.entry(r.clone()).or_default().entry("added".into()).or_default() += 1;
        }
        for r in &removed {
            *summary.rules.entry(r.clone()).or_default().entry("removed".into()).or_default() += 1;
        }
        if new.effect == Effect::Deny && from != "deny" {
            summary.tightening += 1;
        }
        if summary.examples.len() < 20 {
            let action_id = e.payload["action_id"].as_str().unwrap_or_default().to_string();
            summary.examples.push(Flip {
                tool: tools.get(&action_id).cloned().unwrap_or_default(),
                action_id,
                session_id: e.stream.clone(),
                from,
                to,
                rules_added: added,
                rules_removed: removed,
            });
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let fail = summary.tightening > 0 && !args.allow_tightening;
    if args.json {
        output::json(&json!({"summary": summary, "exit_code": if fail { 1 } else { 0 }}));
    } else {
        println!(
            "replayed {} of {} decisions against {} ({} decided by a host guard, not replayed)",
            summary.replayed,
            summary.actions,
            output::short(&summary.candidate_revision),
            summary.decided_by_guard
        );
        println!("unchanged {}   changed {}", summary.unchanged, summary.replayed - summary.unchanged);
        if !summary.flips.is_empty() {
            let rows = summary.flips.iter().map(|(k, v)| vec![k.clone(), v.to_string()]).collect();
            println!("{}", output::table(&["FLIP", "COUNT"], rows));
        }
        if !summary.rules.is_empty() {
            let rows = summary
                .rules
                .iter()
                .map(|(r, m)| {
                    vec![
                        r.clone(),
                        m.get("added").copied().unwrap_or(0).to_string(),
                        m.get("removed").copied().unwrap_or(0).to_string(),
                    ]
                })
                .collect();
            println!("{}", output::table(&["RULE", "NOW MATCHES", "NO LONGER MATCHES"], rows));
        }
        for f in &summary.examples {
            println!("  {} {} ({}): {} -> {}", f.action_id, f.tool, f.session_id, f.from, f.to);
        }
        if fail {
            eprintln!(
                "the candidate would deny {} action(s) that were not denied; pass --allow-tightening if that is intended",
                summary.tightening
            );
        }
    }
    Ok(if fail { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

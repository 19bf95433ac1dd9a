//! Commands that work on local files: serve, check, eval, test, token.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use airlock_core::decision::ApprovalDefaults;
use airlock_core::{Effect, combine};
use airlock_policy::{Options, Policy, TestOutcome};
use airlock_server::Config;
use airlock_server::serve::load_policy;
use anyhow::{Context, bail};
use serde_json::json;

use crate::output;
use crate::{PolicyArgs, local};

pub async fn serve(config_path: PathBuf, listen: Option<String>, json_logs: bool) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn,rmcp=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json_logs {
        builder.json().init();
    } else {
        builder.init();
    }
    let mut config =
        Config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}run `airlock check` to see the same list"))?;
    if let Some(l) = listen {
        config.server.listen = l.parse().with_context(|| format!("`--listen {l}` is not IP:PORT"))?;
    }
    let running = airlock_server::serve::start(config.clone()).await?;
    let policy = load_policy(&config)?;
    tracing::info!(
        addr = %running.addr,
        journal = %airlock_server::journal::describe(&config),
        policy_revision = policy.revision(),
        "airlock started"
    );
    // Tests and scripts read this line to learn the port when the config says 0.
    println!("airlock listening on http://{}", running.addr);
    let _ = std::io::stdout().flush();
    let stop = running.shutdown_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    running.wait().await?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub fn check(config_path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            if json {
                let problems: Vec<_> = e.problems.iter().map(|(k, m)| json!({"key": k, "message": m})).collect();
                output::json(&json!({"ok": false, "file": config_path, "problems": problems}));
            } else {
                eprint!("{e}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    match load_policy(&config) {
        Ok(policy) => {
            let report = policy.run_tests();
            if json {
                output::json(&json!({
                    "ok": report.failed() == 0,
                    "file": config_path,
                    "policy_revision": policy.revision(),
                    "policy_files": policy.files().len(),
                    "agents": config.agents.len(),
                    "humans": config.humans.len(),
                    "upstreams": config.upstreams.len(),
                    "servers": config.servers.len(),
                    "tests": {"passed": report.passed(), "failed": report.failed()},
                }));
            } else {
                println!("config    {} is valid", config_path.display());
                println!(
                    "policy    {} ({} files, revision {})",
                    config.policy.dir.display(),
                    policy.files().len(),
                    output::short(policy.revision())
                );
                println!(
                    "agents    {}   humans {}   upstreams {}   servers {}",
                    config.agents.len(),
                    config.humans.len(),
                    config.upstreams.len(),
                    config.servers.len()
                );
                if report.cases.is_empty() {
                    println!("tests     none (add `test_*` rules in `*_test.rego` files)");
                } else {
                    println!("tests     {} passed, {} failed", report.passed(), report.failed());
                }
                if report.failed() > 0 {
                    eprintln!("policy tests fail; run `airlock test --config {}` for details", config_path.display());
                }
            }
            Ok(if report.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Err(e) => {
            if json {
                output::json(
                    &json!({"ok": false, "file": config_path, "problems": [{"key": "policy.dir", "message": e.to_string()}]}),
                );
            } else {
                eprintln!("`{}` has 1 problem:\n  - policy.dir: {e}", config_path.display());
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn policy_from_args(args: &PolicyArgs) -> anyhow::Result<Policy> {
    let (dir, config_timeout) = match (&args.policy, &args.config) {
        (Some(dir), _) => (dir.clone(), None),
        (None, Some(config)) => {
            let c = Config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
            (c.policy.dir.clone(), Some(c.policy.timeout))
        }
        (None, None) => {
            let default = Path::new("airlock.toml");
            if default.exists() {
                let c = Config::load(default).map_err(|e| anyhow::anyhow!("{e}"))?;
                (c.policy.dir.clone(), Some(c.policy.timeout))
            } else {
                bail!("name a policy with `--policy DIR` or `--config airlock.toml`")
            }
        }
    };
    let timeout = args.timeout_ms.map(Duration::from_millis).or(config_timeout).unwrap_or(Duration::from_millis(1000));
    Ok(Policy::load(&dir, &Options { timeout, coverage: args.coverage })?)
}

pub fn eval(args: &PolicyArgs, input: &Path) -> anyhow::Result<ExitCode> {
    const EXIT_ERROR: u8 = 3;
    let policy = match policy_from_args(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    let text = if input == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read standard input")?;
        s
    } else {
        match std::fs::read_to_string(input) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot read `{}`: {e}", input.display());
                return Ok(ExitCode::from(EXIT_ERROR));
            }
        }
    };
    let doc: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: `{}` is not valid JSON: {e}", input.display());
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    let eval = policy.evaluate(&doc);
    let mut failed = eval.output.as_ref().err().map(ToString::to_string);
    let decision = combine(eval.output, &ApprovalDefaults::default(), policy.revision(), eval.eval_us);
    // A malformed policy output is a policy error too: never a plain deny, never a pass.
    if failed.is_none()
        && let Some(r) = decision.reasons.first().filter(|r| r.rule == airlock_core::decision::RULE_POLICY_ERROR)
    {
        failed = Some(r.msg.clone());
    }
    let code = match (&failed, decision.effect) {
        (Some(_), _) => EXIT_ERROR,
        (None, Effect::Allow) => 0,
        (None, Effect::Deny) => 1,
        (None, Effect::RequireApproval) => 2,
    };
    if args.json {
        output::json(&json!({"decision": decision, "error": failed, "exit_code": code}));
    } else {
        println!("effect    {}", decision.effect);
        println!("risk      {}", decision.risk.as_str());
        println!("revision  {}", output::short(&decision.policy_revision));
        if let Some(req) = &decision.approval {
            let groups = if req.groups.is_empty() { "any approver".to_string() } else { req.groups.join(", ") };
            println!(
                "approval  quorum {} from {groups}{}, expires after {}s",
                req.quorum,
                if req.mfa { ", with MFA" } else { "" },
                req.ttl_seconds
            );
        }
        if let Some(c) = decision.cost_usd {
            println!("cost      ${c:.2}");
        }
        for r in &decision.reasons {
            println!("  - [{}] {}", r.rule, r.msg);
        }
    }
    Ok(ExitCode::from(code))
}

pub fn test(args: &PolicyArgs) -> anyhow::Result<ExitCode> {
    let policy = local::policy_from_args(args)?;
    let report = policy.run_tests();
    if args.json {
        output::json(&report);
    } else {
        let color = std::io::stdout().is_terminal();
        for case in &report.cases {
            let (label, detail) = match &case.outcome {
                TestOutcome::Pass => ("PASS", String::new()),
                TestOutcome::Fail => ("FAIL", String::new()),
                TestOutcome::Error(e) => ("ERROR", format!(": {e}")),
            };
            if case.outcome == TestOutcome::Pass && !args.verbose {
                continue;
            }
            let label = match (color, label) {
                (true, "PASS") => format!("\x1b[32m{label}\x1b[0m"),
                (true, _) => format!("\x1b[31m{label}\x1b[0m"),
                _ => label.to_string(),
            };
            let more = case.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
            println!("{label}  {} ({}){detail}{more}  {}µs", case.name, case.file, case.duration_us);
        }
        if let Some(files) = &report.coverage {
            println!("coverage");
            for f in files {
                let total = f.covered.len() + f.not_covered.len();
                let pct = if total == 0 { 100.0 } else { 100.0 * f.covered.len() as f64 / total as f64 };
                let missed = if f.not_covered.is_empty() {
                    String::new()
                } else {
                    format!(
                        "  not reached: lines {}",
                        f.not_covered.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                    )
                };
                println!("  {:>5.1}%  {}{missed}", pct, f.file);
            }
        }
        if report.cases.is_empty() {
            println!("no tests found: add `test_*` rules to `*_test.rego` files in {}", policy.dir().display());
        } else {
            println!("{} passed, {} failed", report.passed(), report.failed());
        }
    }
    Ok(if report.failed() == 0 && !report.cases.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Parses `7d`, `12h`, `30m` or an RFC 3339 time.
pub fn parse_since(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let (num, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 =
        num.parse().map_err(|_| anyhow::anyhow!("`{text}` is neither RFC 3339 nor an age like 7d, 12h, 30m"))?;
    let d = match unit {
        "d" => chrono::Duration::days(n),
        "h" => chrono::Duration::hours(n),
        "m" => chrono::Duration::minutes(n),
        _ => bail!("`{text}`: the unit must be d, h or m"),
    };
    Ok(chrono::Utc::now() - d)
}

pub fn token_new(json: bool) -> anyhow::Result<ExitCode> {
    let token = format!("alk_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let hash = format!("sha256:{}", hex::encode(airlock_server::config::hash_token(&token)));
    if json {
        output::json(&json!({"token": token, "config_value": hash}));
    } else {
        println!("token (give this to the agent or human; it is not stored anywhere):\n  {token}\n");
        println!("config value (put this in airlock.toml):\n  token = \"{hash}\"");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn token_hash() -> anyhow::Result<ExitCode> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s)?;
    let token = s.trim();
    if token.is_empty() {
        bail!("no token on standard input; try `printf %s \"$TOKEN\" | airlock token hash`");
    }
    println!("sha256:{}", hex::encode(airlock_server::config::hash_token(token)));
    Ok(ExitCode::SUCCESS)
}

//! `airlock audit`: verify the journal, anchor its newest checkpoint, export it. All of them read
//! the journal directly (read-only: the SQLite file, or the PostgreSQL database), so they work
//! beside a running server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use airlock_server::Config;
use airlock_server::audit::{Anchor, CheckpointReport, KeySource, PublicKey, SignedReport};
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::local::parse_since;
use crate::output;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the journal: every hash chain, and every signed checkpoint (its signature, and that
    /// the events it covers are all still there, unchanged). Exit 1 and name the first problem.
    ///
    /// Without a public key (--public-key, `[audit] signing_key`, the anchor's or
    /// `data_dir/audit.pub`) it fails unless told --skip-checkpoints. Checkpoints are stored in
    /// the journal, so cutting the newest events together with their checkpoints is seen only
    /// against an anchor kept elsewhere: --anchor FILE (from `airlock audit anchor`).
    #[command(verbatim_doc_comment)]
    Verify(VerifyArgs),
    /// Print the newest signed checkpoint as JSON, to keep away from the journal (another host,
    /// a ticket, a WORM bucket) and check later with `airlock audit verify --anchor FILE`.
    ///
    /// The checkpoint's signature and the events it covers are checked first; exit 1 if either
    /// is wrong, or if there is no checkpoint yet.
    Anchor(AnchorArgs),
    /// Write the journal as JSON Lines with the proof material (hashes, links, checkpoints),
    /// for a SIEM or an auditor.
    Export {
        /// Config file.
        #[arg(long, short, default_value = "airlock.toml", env = "AIRLOCK_CONFIG")]
        config: PathBuf,
        /// Events from this time on: RFC 3339 (`2026-11-01T00:00:00Z`) or an age (`7d`, `12h`).
        #[arg(long, default_value = "30d")]
        since: String,
        /// Output file (default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Config file (its `[server] data_dir` holds the journal).
    #[arg(long, short, default_value = "airlock.toml", env = "AIRLOCK_CONFIG")]
    config: PathBuf,
    /// The checkpoints' public key: base64 or hex, or a file holding it. Default: the public
    /// half of `[audit] signing_key`, else the anchor's, else `data_dir/audit.pub`.
    #[arg(long, value_name = "KEY|FILE")]
    public_key: Option<String>,
    /// A checkpoint kept elsewhere (`airlock audit anchor`): fail unless the journal still holds,
    /// unchanged, every event it covers.
    #[arg(long, value_name = "FILE")]
    anchor: Option<PathBuf>,
    /// Check only the hash chains, without a public key. The newest events can then be cut
    /// without this command noticing.
    #[arg(long, conflicts_with_all = ["public_key", "anchor"])]
    skip_checkpoints: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct AnchorArgs {
    /// Config file (its `[server] data_dir` holds the journal).
    #[arg(long, short, default_value = "airlock.toml", env = "AIRLOCK_CONFIG")]
    config: PathBuf,
    /// The checkpoints' public key: base64 or hex, or a file holding it. Default: the public
    /// half of `[audit] signing_key`, else `data_dir/audit.pub`.
    #[arg(long, value_name = "KEY|FILE")]
    public_key: Option<String>,
    /// Write the anchor to this file instead of standard output.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify(args) => verify(&args).await,
        AuditCommand::Anchor(args) => anchor(&args).await,
        AuditCommand::Export { config, since, out } => export(&config, &since, out.as_deref()).await,
    }
}

const NO_KEY: &str = "no public key to check the signed checkpoints with: pass --public-key (the key or a file holding it, kept away from the journal), set `[audit] signing_key`, or pass --skip-checkpoints to check only the hash chains";

async fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let journal = airlock_server::journal::reader(&config).await?;
    let path = journal.describe();
    let chains = journal.verify().await?;
    let anchor = args.anchor.as_deref().map(Anchor::read).transpose()?;
    let public = if args.skip_checkpoints {
        None
    } else {
        airlock_server::audit::resolve_public_key(&config, args.public_key.as_deref(), anchor.as_ref())?
    };
    let signed = match &public {
        Some(k) => Some(airlock_server::audit::verify_signed(&journal, &k.key, anchor.as_ref()).await?),
        // Not being able to check the signatures is a failure unless asked for.
        None if !args.skip_checkpoints => Some(SignedReport {
            checkpoints: CheckpointReport {
                checked: 0,
                events: chains.events,
                covered: 0,
                problem: Some(NO_KEY.into()),
            },
            anchor: None,
        }),
        None => None,
    };
    let ok = chains.ok() && signed.as_ref().is_none_or(SignedReport::ok);
    if args.json {
        output::json(&json!({
            "journal": path,
            "ok": ok,
            "report": chains,
            "public_key": public,
            "checkpoints": signed.as_ref().map(|s| &s.checkpoints),
            "checkpoints_skipped": args.skip_checkpoints,
            "anchor": signed.as_ref().and_then(|s| s.anchor.as_ref()),
        }));
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    match &chains.first_problem {
        None => {
            println!("ok: {} events in {} streams, every hash chain intact ({path})", chains.events, chains.streams)
        }
        Some(p) => {
            println!("FAILED: stream `{}` event {}: {}", p.stream, p.seq, p.problem);
            println!("checked {} events before the first problem ({path})", chains.events);
        }
    }
    match &signed {
        None => println!("checkpoints: not checked (--skip-checkpoints): the newest events could have been cut"),
        Some(s) => print_signed(s, public.as_ref()),
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_signed(signed: &SignedReport, public: Option<&PublicKey>) {
    let c = &signed.checkpoints;
    match &c.problem {
        None => println!(
            "ok: {} signed checkpoints verified; the newest covers {} of {} events",
            c.checked, c.covered, c.events
        ),
        Some(p) => println!("FAILED: {p}"),
    }
    if let Some(k) = public {
        let advice = if k.source == KeySource::DataDir {
            ": whoever can rewrite the journal can replace it; pass --public-key with a copy kept elsewhere"
        } else {
            ""
        };
        println!("    signatures checked with {}{advice}", k.source.describe());
    }
    if let Some(a) = &signed.anchor {
        let when = a.created_at.as_deref().map(|t| format!(" (signed {t})")).unwrap_or_default();
        match &a.problem {
            None => {
                println!("ok: the journal still holds, unchanged, the first {} events the anchor covers{when}", a.size)
            }
            Some(p) => println!("FAILED: {p}"),
        }
    }
}

async fn anchor(args: &AnchorArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let journal = airlock_server::journal::reader(&config).await?;
    let public = airlock_server::audit::resolve_public_key(&config, args.public_key.as_deref(), None)?
        .ok_or_else(|| anyhow::anyhow!("no public key to check the newest checkpoint with: pass --public-key (the key or a file holding it) or set `[audit] signing_key`"))?;
    let anchor = airlock_server::audit::latest_anchor(&journal, &public).await?;
    match &args.out {
        None => output::json(&anchor),
        Some(out) => {
            let text = serde_json::to_string_pretty(&anchor)? + "\n";
            std::fs::write(out, text).with_context(|| format!("cannot write `{}`", out.display()))?;
            eprintln!(
                "anchored the first {} events (checkpoint signed {}) in {}",
                anchor.size,
                anchor.created_at.as_deref().unwrap_or("at an unknown time"),
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(config_path: &Path, since: &str, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let journal = airlock_server::journal::reader(&config).await?;
    let since = parse_since(since)?;
    let events = journal.events_since(&since).await?;
    let checkpoints = journal.checkpoints().await?;
    let mut w: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot write `{}`", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    for e in &events {
        let mut v = serde_json::to_value(e)?;
        if let Some(m) = v.as_object_mut() {
            m.insert("type".into(), json!("event"));
        }
        writeln!(w, "{}", serde_json::to_string(&v)?)?;
    }
    let public = airlock_server::audit::public_key_for(&config).ok();
    for c in &checkpoints {
        writeln!(
            w,
            "{}",
            serde_json::to_string(
                &json!({"type": "checkpoint", "size": c.size, "created_at": c.created_at, "note": c.note, "public_key": public})
            )?
        )?;
    }
    w.flush()?;
    if out.is_some() {
        eprintln!("exported {} events and {} checkpoints", events.len(), checkpoints.len());
    }
    Ok(ExitCode::SUCCESS)
}

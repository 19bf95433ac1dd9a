//! The `airlock` binary: composition and commands only. Everything it does is done by the
//! library crates; this file parses arguments, calls them and prints.

mod approvals;
mod audit;
mod client;
mod local;
mod login;
mod migrate;
mod output;
mod plans;
mod replay;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// airlock: the control plane AI agents' actions pass through before they touch infrastructure.
///
/// Agents call tools through airlock; airlock decides each call against Rego policy, holds
/// high-impact calls for human approval, and records every step in a tamper-evident journal.
///
/// Start here:
///   airlock check --config airlock.toml     validate the config and compile the policy
///   airlock serve --config airlock.toml     run the server (HTTP API on 127.0.0.1:7878)
///   airlock approvals list                  see what waits for a human (needs AIRLOCK_TOKEN)
#[derive(Parser)]
#[command(name = "airlock", version, verbatim_doc_comment, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: HTTP API, approvals, journal.
    ///
    /// Prints `airlock listening on http://ADDR` once it accepts requests. Stops cleanly on
    /// Ctrl-C or SIGTERM. Refuses to start when the policy does not compile.
    Serve(ServeArgs),
    /// Validate a config file and compile its policy; exit 1 and list every problem if not.
    Check(CheckArgs),
    /// Evaluate the policy on any JSON document (a Terraform plan, a manifest, a policy input).
    ///
    /// The document is the policy's `input` as it is. Exit status: 0 allow, 1 deny,
    /// 2 require approval, 3 error. Use it as a CI gate:
    ///   terraform show -json plan.out > plan.json
    ///   airlock eval --policy policies --input plan.json
    #[command(verbatim_doc_comment)]
    Eval(EvalArgs),
    /// Run the policy's unit tests: `test_*` rules in `*_test.rego` files.
    Test(PolicyArgs),
    /// List, inspect and vote on approvals (humans; token in AIRLOCK_TOKEN).
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Engage, list and release kill switches (admins; token in AIRLOCK_TOKEN).
    #[command(subcommand)]
    Kill(client::KillCommand),
    /// List and inspect sessions (token in AIRLOCK_TOKEN).
    #[command(subcommand)]
    Sessions(client::SessionsCommand),
    /// A session's plans: agents propose and amend them, humans list, show and vote on them
    /// (token in AIRLOCK_TOKEN).
    #[command(subcommand)]
    Plans(plans::PlansCommand),
    /// Manage humans on a running server: lift a TOTP lock (admins; token in AIRLOCK_TOKEN).
    #[command(subcommand)]
    Humans(client::HumansCommand),
    /// Check the journal's integrity, anchor it, export it.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Sign in at the organisation's identity provider (device flow) and keep the token for the
    /// other commands (in ~/.config/airlock/token.json, mode 0600; AIRLOCK_TOKEN wins over it).
    Login(login::LoginArgs),
    /// Make bearer tokens and their hashes for the config file.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Re-evaluate recorded actions against another policy (replay, backtest).
    Replay(ReplayArgs),
    /// Create or update the journal's tables in PostgreSQL (`[storage] backend = "postgres"`).
    ///
    /// `airlock serve` applies the same migrations when it starts; this runs them on their own (a
    /// deploy step, or a database user that may change tables when the server's may not). Refuses
    /// a database whose schema is newer than this airlock knows.
    ///
    /// With --from-sqlite, it then copies an embedded journal (`data_dir/journal.db`) into the
    /// empty database: every event with its position and hashes, sessions, actions, approvals,
    /// kill switches, the outbox and the signed checkpoints, in one transaction, checked against
    /// the source before it commits. Stop the server that writes the file first.
    ///   airlock migrate --config airlock.toml --from-sqlite .airlock/journal.db
    ///   airlock audit verify --config airlock.toml
    #[command(verbatim_doc_comment)]
    Migrate(migrate::MigrateArgs),
    /// Policy lifecycle on a running server: status, reload, rollback, shadow, diff, promote
    /// (humans with the `admin` role; token in AIRLOCK_TOKEN).
    #[command(subcommand)]
    Policy(client::PolicyCommand),
    /// Show the MCP servers behind the gateway: connected or not, why, and how often they were
    /// (re)connected (humans; token in AIRLOCK_TOKEN). Exits 1 when any upstream is not up.
    Upstreams(client::Conn),
    /// Show the virtual servers (`[[servers]]`, each at /mcp/{name}): what each offers, and the
    /// tool names it withholds because several tools have them (humans; token in AIRLOCK_TOKEN).
    /// Exits 1 when any server withholds a name.
    Servers(client::Conn),
    /// Be a stdio MCP server that forwards to airlock's /mcp endpoint (for clients that only
    /// launch stdio servers). The agent's token comes from AIRLOCK_TOKEN.
    ///
    /// Example client configuration:
    ///   {"command": "airlock", "args": ["connect", "--url", "http://127.0.0.1:7878/mcp"],
    ///    "env": {"AIRLOCK_TOKEN": "<agent token>"}}
    #[command(verbatim_doc_comment)]
    Connect(ConnectArgs),
}

#[derive(Args)]
struct ConnectArgs {
    /// airlock's MCP endpoint.
    #[arg(long, default_value = "http://127.0.0.1:7878/mcp", env = "AIRLOCK_MCP_URL")]
    url: String,
    /// Task of the session (sent as X-Airlock-Task).
    #[arg(long)]
    task: Option<String>,
    /// The human the session acts for, who then can't approve its actions (sent as
    /// Airlock-On-Behalf-Of).
    #[arg(long, env = "AIRLOCK_ON_BEHALF_OF")]
    on_behalf_of: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// Config file.
    #[arg(long, short, default_value = "airlock.toml", env = "AIRLOCK_CONFIG")]
    config: PathBuf,
    /// Override `[server] listen` (for example 127.0.0.1:0 for a free port).
    #[arg(long)]
    listen: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    json_logs: bool,
}

#[derive(Args)]
struct CheckArgs {
    /// Config file.
    #[arg(long, short, default_value = "airlock.toml", env = "AIRLOCK_CONFIG")]
    config: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PolicyArgs {
    /// Config file whose `[policy] dir` to use.
    #[arg(long, short, conflicts_with = "policy", env = "AIRLOCK_CONFIG")]
    config: Option<PathBuf>,
    /// A policy directory, instead of a config file.
    #[arg(long, short)]
    policy: Option<PathBuf>,
    /// Evaluation time limit in milliseconds (default: the config's, else 1000).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Show every test, not only failures.
    #[arg(long, short)]
    verbose: bool,
    /// Report which policy lines the tests reach.
    #[arg(long)]
    coverage: bool,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// The JSON document to evaluate; `-` reads standard input.
    #[arg(long, short)]
    input: PathBuf,
}

/// Re-evaluate recorded actions against another policy and show where decisions would differ.
///
///   airlock replay session ses_… --policy candidate/   one session
///   airlock replay --since 7d --policy candidate/      a backtest over a week
///
/// Exit status 1 when the candidate would deny something that was allowed (use
/// --allow-tightening to accept that), 0 otherwise.
#[derive(Args)]
#[command(verbatim_doc_comment, args_conflicts_with_subcommands = false)]
struct ReplayArgs {
    #[command(subcommand)]
    target: Option<ReplayTarget>,
    /// The candidate policy directory.
    #[arg(long, short, global = true)]
    policy: Option<PathBuf>,
    /// Config file (its journal is replayed).
    #[arg(long, short, default_value = "airlock.toml", env = "AIRLOCK_CONFIG", global = true)]
    config: PathBuf,
    /// Actions from this time on: RFC 3339 or an age (`7d`, `12h`).
    #[arg(long, default_value = "7d", global = true)]
    since: String,
    /// Do not fail when the candidate is stricter.
    #[arg(long, global = true)]
    allow_tightening: bool,
    /// Print the result as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum ReplayTarget {
    /// One session's actions.
    Session {
        /// Session id (`ses_…`).
        id: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a new random token and print it with the `sha256:` line for the config.
    New {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the `sha256:` config value of a token read from standard input.
    Hash,
}

#[tokio::main]
async fn main() -> ExitCode {
    // One TLS crypto provider for every HTTPS client in the process (upstreams, the CLI).
    airlock_mcp::ensure_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => local::serve(args.config, args.listen, args.json_logs).await,
        Command::Check(args) => local::check(&args.config, args.json),
        Command::Eval(args) => local::eval(&args.policy, &args.input),
        Command::Test(args) => local::test(&args),
        Command::Approvals(cmd) => approvals::approvals(cmd).await,
        Command::Login(args) => login::login(args).await,
        Command::Kill(cmd) => client::kill(cmd).await,
        Command::Humans(cmd) => client::humans(cmd).await,
        Command::Sessions(cmd) => client::sessions(cmd).await,
        Command::Plans(cmd) => plans::plans(cmd).await,
        Command::Audit(cmd) => audit::run(cmd).await,
        Command::Replay(args) => replay::run(&args).await,
        Command::Migrate(args) => migrate::run(&args).await,
        Command::Policy(cmd) => client::policy(cmd).await,
        Command::Token(TokenCommand::New { json }) => local::token_new(json),
        Command::Token(TokenCommand::Hash) => local::token_hash(),
        Command::Connect(args) => connect(args).await,
        Command::Upstreams(conn) => client::upstreams(conn).await,
        Command::Servers(conn) => client::servers(conn).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn connect(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    // stdout carries the protocol: logs go to stderr only.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let token = std::env::var("AIRLOCK_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .context("set AIRLOCK_TOKEN to the agent's bearer token")?;
    airlock_mcp::connect::run_stdio_bridge(&args.url, &token, args.task, args.on_behalf_of).await?;
    Ok(ExitCode::SUCCESS)
}

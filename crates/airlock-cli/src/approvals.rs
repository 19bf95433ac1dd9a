//! `airlock approvals`: the approval queue over the HTTP API, and the vote that `airlock plans
//! approve|deny` casts too.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{Client, Conn, s, with_hint};
use crate::output;

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// List approvals (pending by default).
    List {
        /// pending, approved, denied, expired, cancelled or all.
        #[arg(long, default_value = "pending")]
        status: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one approval with its action, arguments and policy reasons.
    Show {
        /// Approval id (`apr_…`).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve: counts toward the quorum.
    Approve(VoteArgs),
    /// Deny: one deny ends the approval.
    Deny(VoteArgs),
}

#[derive(Args)]
pub struct VoteArgs {
    /// Approval id (`apr_…`).
    id: String,
    #[command(flatten)]
    ballot: Ballot,
    #[command(flatten)]
    conn: Conn,
}

/// What a human sends with a vote, wherever they vote from (`approvals`, `plans`).
#[derive(Args)]
pub struct Ballot {
    /// Why (required; recorded with the vote and shown to the other approvers).
    #[arg(long, short = 'm')]
    comment: String,
    /// Current TOTP code from your authenticator app, when the approval needs MFA.
    #[arg(long)]
    totp: Option<String>,
}

/// Whether a vote approves or denies.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    /// The last segment of the vote's path, `/v1/approvals/{id}/{verdict}`.
    fn path(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }
}

fn approval_rows(list: &[Value]) -> Vec<Vec<String>> {
    list.iter()
        .map(|a| {
            let action = a.get("action").cloned().unwrap_or(Value::Null);
            let req = a.get("requirements").cloned().unwrap_or(Value::Null);
            let votes = a.get("votes").and_then(Value::as_array).map_or(0, Vec::len);
            vec![
                s(a, "id"),
                s(a, "status"),
                s(a, "agent_id"),
                s(&action, "tool"),
                action.get("decision").map(|d| s(d, "risk")).unwrap_or_default(),
                format!("{votes}/{}", s(&req, "quorum")),
                output::age(&s(a, "created_at")),
                output::until(&s(a, "expires_at")),
            ]
        })
        .collect()
}

pub async fn approvals(cmd: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ApprovalsCommand::List { status, conn } => {
            let c = Client::new(&conn)?;
            let v = c.call(reqwest::Method::GET, &format!("/v1/approvals?status={status}"), None).await?;
            if conn.json {
                output::json(&v);
            } else {
                let list = v.get("approvals").and_then(Value::as_array).cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no {status} approvals");
                } else {
                    println!(
                        "{}",
                        output::table(
                            &["APPROVAL", "STATUS", "AGENT", "TOOL", "RISK", "VOTES", "AGE", "EXPIRES"],
                            approval_rows(&list)
                        )
                    );
                }
            }
        }
        ApprovalsCommand::Show { id, conn } => {
            let c = Client::new(&conn)?;
            let v = c.call(reqwest::Method::GET, &format!("/v1/approvals/{id}"), None).await?;
            if conn.json {
                output::json(&v);
            } else {
                print_approval(&v);
            }
        }
        ApprovalsCommand::Approve(args) => return vote(args, Verdict::Approve).await,
        ApprovalsCommand::Deny(args) => return vote(args, Verdict::Deny).await,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_approval(v: &Value) {
    let action = v.get("action").cloned().unwrap_or(Value::Null);
    let decision = action.get("decision").cloned().unwrap_or(Value::Null);
    let req = v.get("requirements").cloned().unwrap_or(Value::Null);
    println!("approval   {} ({})", s(v, "id"), s(v, "status"));
    println!("agent      {}   session {}", s(v, "agent_id"), s(v, "session_id"));
    println!("tool       {}", s(&action, "tool"));
    println!("why        {}", s(&action, "justification"));
    println!("risk       {}   policy {}", s(&decision, "risk"), output::short(&s(&decision, "policy_revision")));
    println!(
        "needs      {} approval(s){}{}, expires {}",
        s(&req, "quorum"),
        req.get("groups")
            .and_then(Value::as_array)
            .filter(|g| !g.is_empty())
            .map(|g| format!(
                " from {}",
                g.iter().map(|x| x.as_str().unwrap_or_default()).collect::<Vec<_>>().join("/")
            ))
            .unwrap_or_default(),
        if req.get("mfa") == Some(&Value::Bool(true)) { " with MFA" } else { "" },
        output::until(&s(v, "expires_at"))
    );
    println!("reasons");
    for r in decision.get("reasons").and_then(Value::as_array).cloned().unwrap_or_default() {
        println!("  - [{}] {}", s(&r, "rule"), s(&r, "msg"));
    }
    println!("arguments");
    let args = serde_json::to_string_pretty(action.get("arguments").unwrap_or(&Value::Null)).unwrap_or_default();
    for line in args.lines() {
        println!("  {line}");
    }
    let votes = v.get("votes").and_then(Value::as_array).cloned().unwrap_or_default();
    if !votes.is_empty() {
        println!("votes");
        for vote in votes {
            println!("  - {} {}: {}", s(&vote, "human"), s(&vote, "verdict"), s(&vote, "comment"));
        }
    }
}

async fn vote(args: VoteArgs, verdict: Verdict) -> anyhow::Result<ExitCode> {
    let c = Client::new(&args.conn)?;
    let v = cast_vote(&c, &args.id, verdict, &args.ballot).await?;
    if args.conn.json {
        output::json(&v);
    } else {
        let approval = v.get("approval").cloned().unwrap_or(Value::Null);
        let votes = approval.get("votes").and_then(Value::as_array).map_or(0, Vec::len);
        let quorum = approval.get("requirements").map(|r| s(r, "quorum")).unwrap_or_default();
        println!(
            "recorded: approval {} is {} ({votes}/{quorum} votes); action {} is {}",
            args.id,
            s(&approval, "status"),
            s(&v, "id"),
            s(&v, "status")
        );
        if let Some(missing) = still_needed(&approval) {
            println!("still needs {missing}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Casts the human's vote on an approval and returns the API's answer (the approval's action,
/// with the approval). Refusals say what to do when there is a usual fix.
pub(crate) async fn cast_vote(c: &Client, approval: &str, verdict: Verdict, ballot: &Ballot) -> anyhow::Result<Value> {
    let body = json!({"comment": ballot.comment, "totp": ballot.totp});
    let path = format!("/v1/approvals/{approval}/{}", verdict.path());
    c.call(reqwest::Method::POST, &path, Some(body)).await.map_err(|e| {
        with_hint(e, |api| match api.rule() {
            "mfa" if ballot.totp.is_none() => {
                Some("pass `--totp CODE` with the current code from your authenticator app".into())
            }
            "human_only" => Some("votes need a human's token in AIRLOCK_TOKEN; agents can't vote".into()),
            "role" => Some("ask an admin for the `approve` role, or use the token of a human who has it".into()),
            _ => None,
        })
    })
}

/// What a pending approval still needs, in words (`1 more approval from `sre` (PLAN1)`), from
/// the approval as the API shows it; `None` when it is not pending or nothing is missing.
pub(crate) fn still_needed(approval: &Value) -> Option<String> {
    use airlock_core::model::{Approval, ApprovalStatus, RuleRequirement};
    let approval: Approval = serde_json::from_value(approval.clone()).ok()?;
    if approval.status != ApprovalStatus::Pending {
        return None;
    }
    let legacy = approval.requirements.rules.is_empty();
    let missing: Vec<String> = approval
        .requirements
        .each()
        .iter()
        .filter_map(|r| {
            // As `vote::resolve` counts: votes on an approval without per-rule requirements
            // were checked against its groups when cast, so each counts.
            let counted = RuleRequirement { groups: if legacy { Vec::new() } else { r.groups.clone() }, ..r.clone() };
            let have = airlock_core::vote::approvers_for(&approval, &counted);
            let need = usize::try_from(r.quorum.max(1)).unwrap_or(usize::MAX).saturating_sub(have);
            (need > 0).then(|| {
                let noun = if need == 1 { "approval" } else { "approvals" };
                let from = if r.groups.is_empty() {
                    String::new()
                } else {
                    format!(" from {}", r.groups.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(" or "))
                };
                let rule = if r.rule.is_empty() { String::new() } else { format!(" ({})", r.rule) };
                format!("{need} more {noun}{from}{rule}")
            })
        })
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mfa = if approval.requirements.mfa { ", with MFA" } else { "" };
    Some(format!("{}{mfa}", missing.join(" and ")))
}

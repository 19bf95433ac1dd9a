//! `airlock plans`: a session's plans over the HTTP API (`docs/plans.md`). Agents propose and
//! amend them; humans read them and vote on their versions. A vote on a plan is a vote on the
//! version's approval, cast by the same code as `airlock approvals approve|deny`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::approvals::{Ballot, Verdict, cast_vote, still_needed};
use crate::client::{Client, Conn, s, with_hint};
use crate::output;

#[derive(Subcommand)]
pub enum PlansCommand {
    /// List a session's plans.
    List {
        /// Session id (`ses_…`).
        session: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a plan: its steps and their progress, its versions, and what a pending amendment
    /// changes.
    ///
    /// The steps table names each step's assignee (the agents that run it under a lease; empty
    /// when the plan's own session runs it). A pending amendment's difference from the version in
    /// force is printed step by step: `+` added, `-` removed, `~` changed (steps and the goal,
    /// budget, deadline and monitors), `=` unchanged. Vote on it with
    /// `airlock plans approve|deny … --version N`, N being the pending version shown.
    Show {
        /// Session id (`ses_…`).
        session: String,
        /// Plan id (`pln_…`).
        plan: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Propose the session's plan from a JSON file (agents; the agent's token in AIRLOCK_TOKEN).
    ///
    /// A plan is a goal and the steps to reach it. Prints the plan's id, its version and status
    /// and, when it waits for approval, the approval and the command that approves it (with its
    /// `--version`). A file that is not a plan is refused before anything is sent, with the line
    /// and column of the problem. Exit status 1 when policy refuses the plan.
    ///
    /// The file holds the plan as JSON (`-` reads standard input); every field is in
    /// docs/plans.md. For example, plan.json:
    ///   {"goal": "migrate the orders database to schema 42",
    ///    "budget_usd": 100,
    ///    "steps": [
    ///      {"id": "backup", "tool": "db.backup",
    ///       "arguments": {"type": "object", "properties": {"db": {"const": "orders"}}}},
    ///      {"id": "migrate", "tool": "db.migrate",
    ///       "arguments": {"type": "object", "properties": {"version": {"maximum": 42}}}}]}
    ///
    ///   AIRLOCK_TOKEN=$AGENT_TOKEN airlock plans propose ses_… --file plan.json
    ///   plan pln_… version 1 waits for approval apr_…
    ///   a human approves it with: airlock plans approve ses_… pln_… --version 1 -m "why"
    #[command(verbatim_doc_comment)]
    Propose {
        /// Session id (`ses_…`) of the agent's session.
        session: String,
        /// The plan as JSON; `-` reads standard input.
        #[arg(long, short)]
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Amend a plan: propose its next version (agents; the agent's token in AIRLOCK_TOKEN).
    ///
    /// The file holds the whole new version, as for `propose`; steps are matched by `id`, so keep
    /// the ids of the steps that stay (unchanged steps keep their progress). Prints how the new
    /// version differs from the one in force (`+` added, `-` removed, `~` changed) and, when it
    /// waits for approval, how to approve it. The version in force holds the session's calls
    /// until the amendment is approved.
    ///
    ///   AIRLOCK_TOKEN=$AGENT_TOKEN airlock plans amend ses_… pln_… --file plan-v2.json
    ///   plan pln_… version 2 waits for approval apr_…; version 1 stays in force until then
    ///     ~ goal: `back up orders` → `back up and vacuum orders`
    ///     + step vacuum db.vacuum
    ///     = unchanged: backup
    ///   a human approves it with: airlock plans approve ses_… pln_… --version 2 -m "why"
    #[command(verbatim_doc_comment)]
    Amend {
        /// Session id (`ses_…`).
        session: String,
        /// Plan id (`pln_…`).
        plan: String,
        /// The new version as JSON; `-` reads standard input.
        #[arg(long, short)]
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve a version of a plan that waits for approval (humans with the `approve` role).
    ///
    /// `--version` is required: the version you read (`airlock plans show` names the one that
    /// waits). The vote is refused, before it is cast, if that version no longer waits (it was
    /// denied, expired or superseded, and the agent may have proposed another since), so a vote
    /// never lands on a version you did not read. The vote counts toward the version's quorum
    /// like `airlock approvals approve` on its approval; prints whether the version is now in
    /// force or how many votes it still needs.
    ///   airlock plans approve ses_… pln_… --version 2 -m "read every step; the backup comes first"
    #[command(verbatim_doc_comment, disable_version_flag = true)]
    Approve(PlanVoteArgs),
    /// Deny a version of a plan that waits for approval (humans with the `approve` role).
    ///
    /// `--version` is required, as for `approve`. One deny ends the version; the version in
    /// force, if any, stays in force.
    ///   airlock plans deny ses_… pln_… --version 2 -m "no migrations during the freeze"
    #[command(verbatim_doc_comment, disable_version_flag = true)]
    Deny(PlanVoteArgs),
}

#[derive(Args)]
pub struct PlanVoteArgs {
    /// Session id (`ses_…`).
    session: String,
    /// Plan id (`pln_…`).
    plan: String,
    /// The version to vote on: the one you read. It must be waiting for approval.
    #[arg(long, value_name = "N")]
    version: u64,
    #[command(flatten)]
    ballot: Ballot,
    #[command(flatten)]
    conn: Conn,
}

pub async fn plans(cmd: PlansCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PlansCommand::List { session, conn } => {
            let c = Client::new(&conn)?;
            let v = c.call(reqwest::Method::GET, &format!("/v1/sessions/{session}/plans"), None).await?;
            if conn.json {
                output::json(&v);
            } else {
                let list = v.get("plans").and_then(Value::as_array).cloned().unwrap_or_default();
                let rows = list
                    .iter()
                    .map(|p| {
                        let steps = p.get("steps").and_then(Value::as_array).cloned().unwrap_or_default();
                        let done = steps.iter().filter(|x| s(x, "status") == "done").count();
                        vec![
                            s(p, "id"),
                            s(p, "status"),
                            s(p, "in_force"),
                            s(p, "pending"),
                            format!("{done}/{}", steps.len()),
                            s(p, "goal").chars().take(50).collect(),
                        ]
                    })
                    .collect();
                println!("{}", output::table(&["PLAN", "STATUS", "IN FORCE", "PENDING", "DONE", "GOAL"], rows));
            }
        }
        PlansCommand::Show { session, plan, conn } => {
            let c = Client::new(&conn)?;
            let v = c.call(reqwest::Method::GET, &format!("/v1/sessions/{session}/plans/{plan}"), None).await?;
            if conn.json {
                output::json(&v);
            } else {
                print_plan(&v);
            }
        }
        PlansCommand::Propose { session, file, conn } => {
            return propose(&session, None, &file, &conn).await;
        }
        PlansCommand::Amend { session, plan, file, conn } => {
            return propose(&session, Some(&plan), &file, &conn).await;
        }
        PlansCommand::Approve(args) => return vote(args, Verdict::Approve).await,
        PlansCommand::Deny(args) => return vote(args, Verdict::Deny).await,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(v: &Value) {
    println!(
        "plan     {} ({})  agent {}  session {}",
        s(v, "id"),
        s(v, "status"),
        s(v, "agent_id"),
        s(v, "session_id")
    );
    println!("goal     {}", s(v, "goal"));
    println!("spent    ${:.2}", v.get("spent_usd").and_then(Value::as_f64).unwrap_or(0.0));
    if v.get("finished") == Some(&Value::Bool(true)) {
        println!("finished every step is done");
    }
    if let Some(stuck) = v.get("stuck").filter(|x| !x.is_null()) {
        println!("stuck    no step progress since {} (stuck at {})", s(stuck, "since"), s(stuck, "at"));
    }
    let steps = v.get("steps").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows = steps
        .iter()
        .map(|x| {
            vec![
                s(x, "id"),
                s(x, "tool"),
                s(x, "status"),
                s(x, "assignee"),
                x.get("arguments").map(Value::to_string).unwrap_or_default().chars().take(60).collect(),
                x.get("actions").and_then(Value::as_array).map(|a| a.len().to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    println!("{}", output::table(&["STEP", "TOOL", "STATUS", "ASSIGNEE", "ARGUMENTS (SCHEMA)", "CALLS"], rows));
    let versions = v.get("versions").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows = versions
        .iter()
        .map(|x| {
            let by = x
                .get("approved_by")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            vec![s(x, "version"), s(x, "status"), s(x, "approval_id"), by, output::age(&s(x, "proposed_at"))]
        })
        .collect();
    println!("{}", output::table(&["VERSION", "STATUS", "APPROVAL", "APPROVED BY", "AGE"], rows));
    if let Some(diff) = v.get("diff").filter(|d| !d.is_null()) {
        let pending = version(v, v.get("pending").and_then(Value::as_u64));
        let in_force = version(v, v.get("in_force").and_then(Value::as_u64));
        println!("pending version {} changes:", s(v, "pending"));
        for line in diff_lines(diff, in_force.map(|x| &x["plan"]), pending.map(|x| &x["plan"])) {
            println!("  {line}");
        }
        println!(
            "vote with: airlock plans approve|deny {} {} --version {} -m \"why\"",
            s(v, "session_id"),
            s(v, "id"),
            s(v, "pending")
        );
    }
}

/// One version of a plan view (`versions[]`), by number.
fn version(view: &Value, number: Option<u64>) -> Option<&Value> {
    let number = number?;
    view.get("versions")?.as_array()?.iter().find(|x| x.get("version").and_then(Value::as_u64) == Some(number))
}

/// A plan difference (`PlanDiff` as the API shows it) in lines for people: `~` a changed field or
/// step, `+` an added step, `-` a removed step, `=` the steps that stay as they were. `old` and
/// `new` are the two versions' plans, for the values of changed fields (the difference itself
/// only says which changed).
fn diff_lines(diff: &Value, old: Option<&Value>, new: Option<&Value>) -> Vec<String> {
    let null = Value::Null;
    let (old, new) = (old.unwrap_or(&null), new.unwrap_or(&null));
    let mut lines = Vec::new();
    let changed = |flag: &str| diff.get(flag) == Some(&Value::Bool(true));
    if changed("goal_changed") {
        lines.push(format!("~ goal: {} → {}", shown(old.get("goal")), shown(new.get("goal"))));
    }
    if changed("budget_changed") {
        lines.push(format!("~ budget_usd: {} → {}", shown(old.get("budget_usd")), shown(new.get("budget_usd"))));
    }
    if changed("deadline_changed") {
        lines.push(format!("~ deadline: {} → {}", shown(old.get("deadline")), shown(new.get("deadline"))));
    }
    if changed("monitors_changed") {
        let fields = ["stuck_after_seconds", "pause_when_stuck", "cascade_failures", "cascade_window_seconds"];
        let what: Vec<String> = fields
            .iter()
            .filter(|f| old.get(**f) != new.get(**f))
            .map(|f| format!("{f} {} → {}", shown(old.get(*f)), shown(new.get(*f))))
            .collect();
        lines.push(if what.is_empty() { "~ monitors".to_string() } else { format!("~ monitors: {}", what.join(", ")) });
    }
    let list = |k: &str| diff.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    for step in list("added") {
        lines.push(format!("+ step {} {}{}", s(&step, "id"), s(&step, "tool"), step_detail(&step)));
    }
    for step in list("removed") {
        lines.push(format!("- step {} {}", s(&step, "id"), s(&step, "tool")));
    }
    for step in list("changed") {
        let (from, to) = (step.get("from").unwrap_or(&null), step.get("to").unwrap_or(&null));
        let fields =
            ["tool", "arguments", "description", "expected_cost_usd", "assignee", "lease_seconds", "max_attempts"];
        let what: Vec<String> = fields
            .iter()
            .filter(|f| from.get(**f) != to.get(**f))
            .map(|f| format!("{f} {} → {}", shown(from.get(*f)), shown(to.get(*f))))
            .collect();
        // A field this list does not know yet still shows the step as changed, without a dangling
        // colon.
        let what = if what.is_empty() { String::new() } else { format!(": {}", what.join(", ")) };
        lines.push(format!("~ step {} {}{what}", s(&step, "id"), s(to, "tool")));
    }
    let unchanged = list("unchanged");
    if !unchanged.is_empty() {
        let ids: Vec<&str> = unchanged.iter().filter_map(Value::as_str).collect();
        lines.push(format!("= unchanged: {}", ids.join(", ")));
    }
    lines
}

/// What an added step asks for, after its id and tool: its description, argument schema and who
/// runs it (assignee, lease and attempts).
fn step_detail(step: &Value) -> String {
    let mut out = String::new();
    if !s(step, "description").is_empty() {
        out.push_str(&format!(" ({})", s(step, "description")));
    }
    if let Some(schema) = step.get("arguments").filter(|a| a.as_object().is_some_and(|o| !o.is_empty())) {
        out.push_str(&format!(" arguments {}", clipped(&schema.to_string())));
    }
    if let Some(assignee) = step.get("assignee").and_then(Value::as_str) {
        out.push_str(&format!(" assignee {}", clipped(assignee)));
        if let Some(secs) = step.get("lease_seconds").and_then(Value::as_u64) {
            out.push_str(&format!(" lease_seconds {secs}"));
        }
        if let Some(n) = step.get("max_attempts").and_then(Value::as_u64) {
            out.push_str(&format!(" max_attempts {n}"));
        }
    }
    out
}

/// A field's value in a difference line: text in backticks, JSON as it is, absent as `none`.
fn shown(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "none".into(),
        Some(Value::String(x)) => format!("`{}`", clipped(x)),
        Some(other) => clipped(&other.to_string()),
    }
}

/// At most 80 characters, so one long schema does not hide the rest of the difference.
fn clipped(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        return text.to_string();
    }
    format!("{}…", text.chars().take(MAX - 1).collect::<String>())
}

/// Reads a plan file (`-`: standard input) and checks that it is a plan before anything is sent,
/// naming the file, line and column of the first problem.
fn read_plan(file: &Path) -> anyhow::Result<Value> {
    let (name, text) = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the plan from standard input")?;
        ("standard input".to_string(), text)
    } else {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read `{}`", file.display()))?;
        (format!("`{}`", file.display()), text)
    };
    // The shape first: a misspelt or missing field is reported with its place, like bad syntax.
    if let Err(e) = serde_json::from_str::<airlock_core::plan::PlanDraft>(&text) {
        let place = format!("line {}, column {}", e.line(), e.column());
        let message = e.to_string();
        let message = message.strip_suffix(&format!(" at line {} column {}", e.line(), e.column())).unwrap_or(&message);
        // Serde names the Rust types it expected; say what they are in the plan instead.
        let message =
            message.replace("struct PlanDraft", "a plan (an object)").replace("struct PlanStep", "a step (an object)");
        if e.is_data() {
            bail!("{name} is not a plan: {place}: {message} (the fields are in docs/plans.md)");
        }
        bail!("{name} is not valid JSON: {place}: {message}");
    }
    serde_json::from_str(&text).with_context(|| format!("{name} is not valid JSON"))
}

/// `plans propose` (no `plan`) and `plans amend`: posts the plan with the agent's token and says
/// what became of it.
async fn propose(session: &str, plan: Option<&str>, file: &Path, conn: &Conn) -> anyhow::Result<ExitCode> {
    let body = read_plan(file)?;
    let c = Client::new(conn)?;
    let path = match plan {
        Some(p) => format!("/v1/sessions/{session}/plans/{p}/amend"),
        None => format!("/v1/sessions/{session}/plans"),
    };
    let (status, v) = c.send(reqwest::Method::POST, &path, Some(body)).await?;
    // A refused plan is a `403` with the plan; any other error answer is a problem document.
    let is_plan = v.get("versions").is_some_and(Value::is_array);
    if !status.is_success() && !is_plan {
        let e = crate::client::ApiError::from_answer(status, &v).into();
        return Err(with_hint(e, |api| match (api.status.as_u16(), api.rule()) {
            (403, "agent_only") => Some(
                "plans are proposed with an agent's token in AIRLOCK_TOKEN; humans vote on them with \
                 `airlock plans approve SES PLN --version N`"
                    .into(),
            ),
            (409, _) if plan.is_none() => api.detail.split_whitespace().find(|w| w.starts_with("pln_")).map(|id| {
                let id = id.trim_end_matches(|ch: char| !ch.is_ascii_alphanumeric());
                format!("to change it: airlock plans amend {session} {id} --file {}", file.display())
            }),
            (409, _) => {
                let number = waiting_version(&api.detail).map_or_else(|| "N".to_string(), |n| n.to_string());
                Some(format!(
                    "a human decides the waiting version first: airlock plans approve|deny {session} {} \
                     --version {number} -m \"why\"",
                    plan.unwrap_or_default()
                ))
            }
            _ => None,
        }));
    }
    if conn.json {
        output::json(&v);
        return Ok(if status.is_success() { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    let id = s(&v, "id");
    let newest = v.get("versions").and_then(Value::as_array).and_then(|x| x.last()).cloned().unwrap_or(Value::Null);
    let number = s(&newest, "version");
    let in_force = v.get("in_force").and_then(Value::as_u64);
    let stays = match in_force {
        Some(n) if plan.is_some() && n.to_string() != number => format!("; version {n} stays in force until then"),
        _ => String::new(),
    };
    match s(&newest, "status").as_str() {
        "pending" => println!("plan {id} version {number} waits for approval {}{stays}", s(&newest, "approval_id")),
        "approved" => println!("plan {id} version {number} is in force: policy allowed it without an approval"),
        other => println!("plan {id} version {number} was refused ({other})"),
    }
    if plan.is_some() {
        for line in amendment_lines(&v, &newest) {
            println!("  {line}");
        }
    }
    match s(&newest, "status").as_str() {
        "pending" => {
            println!("a human approves it with: airlock plans approve {session} {id} --version {number} -m \"why\"");
            println!("the agent waits for it with: GET /v1/actions/{}?wait=30", s(&newest, "action_id"));
            Ok(ExitCode::SUCCESS)
        }
        "approved" => Ok(ExitCode::SUCCESS),
        _ => {
            // Why: the proposal's action carries the decision's reasons.
            let action = c.call(reqwest::Method::GET, &format!("/v1/actions/{}", s(&newest, "action_id")), None).await;
            if let Ok(action) = action {
                for r in action["decision"]["reasons"].as_array().cloned().unwrap_or_default() {
                    println!("  - [{}] {}", s(&r, "rule"), s(&r, "msg"));
                }
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// The version a `409` on an amendment names as still waiting for approval (`version 2 of plan
/// pln_… is still waiting for approval; …`), if it names one.
fn waiting_version(detail: &str) -> Option<u64> {
    let words: Vec<&str> = detail.split_whitespace().collect();
    words.windows(4).find_map(|w| match w {
        ["version", n, "of", "plan"] => n.parse().ok(),
        _ => None,
    })
}

/// How an amendment differs from the version it would replace: the API's `diff` while it waits,
/// else (allowed at once, or refused) the same difference worked out from the two versions.
fn amendment_lines(view: &Value, newest: &Value) -> Vec<String> {
    let versions = view.get("versions").and_then(Value::as_array).cloned().unwrap_or_default();
    let number = newest.get("version").and_then(Value::as_u64);
    // The version it is measured against: the one in force, unless the amendment is; then the
    // one it superseded.
    let base = match view.get("in_force").and_then(Value::as_u64) {
        Some(n) if Some(n) != number => version(view, Some(n)).cloned(),
        _ => versions.iter().rev().find(|x| s(x, "status") == "superseded").cloned(),
    };
    let Some(base) = base else { return Vec::new() };
    let diff = match view.get("diff").filter(|d| !d.is_null()) {
        Some(d) => d.clone(),
        None => {
            let parse = |x: &Value| serde_json::from_value::<airlock_core::plan::PlanDraft>(x["plan"].clone()).ok();
            match (parse(&base), parse(newest)) {
                (Some(old), Some(new)) => {
                    serde_json::to_value(airlock_core::plan::diff(&old, &new)).unwrap_or_default()
                }
                _ => return Vec::new(),
            }
        }
    };
    diff_lines(&diff, Some(&base["plan"]), Some(&newest["plan"]))
}

/// `plans approve|deny`: finds the version's approval in the plan and votes on it.
async fn vote(args: PlanVoteArgs, verdict: Verdict) -> anyhow::Result<ExitCode> {
    let c = Client::new(&args.conn)?;
    let path = format!("/v1/sessions/{}/plans/{}", args.session, args.plan);
    let view = c.call(reqwest::Method::GET, &path, None).await?;
    let (number, approval) = ballot_box(&view, &args.plan, args.version)?;
    let answer = cast_vote(&c, &approval, verdict, &args.ballot).await?;
    if args.conn.json {
        output::json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let after = c.call(reqwest::Method::GET, &path, None).await?;
    let plan = &args.plan;
    let apr = answer.get("approval").cloned().unwrap_or(Value::Null);
    let in_force = after.get("in_force").and_then(Value::as_u64);
    match s(&apr, "status").as_str() {
        "approved" if in_force == Some(number) => {
            let by = version(&after, Some(number))
                .and_then(|x| x.get("approved_by"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            println!("plan {plan} version {number} is in force (approved by {by})");
        }
        "pending" => {
            let votes = apr.get("votes").and_then(Value::as_array).map_or(0, Vec::len);
            println!(
                "recorded your vote on plan {plan} version {number} (approval {approval}, {votes} vote(s) so far)"
            );
            match still_needed(&apr) {
                Some(missing) => println!("it still needs {missing}"),
                None => println!("it still waits for approval"),
            }
        }
        "denied" => {
            let stays = match in_force {
                Some(n) => format!("version {n} stays in force"),
                None => "the plan has no version in force".to_string(),
            };
            println!("plan {plan} version {number} is denied; {stays}");
        }
        other => {
            let status = version(&after, Some(number)).map(|x| s(x, "status")).unwrap_or_default();
            println!("approval {approval} is {other}; plan {plan} version {number} is {status}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The version `wanted` and its approval id, or why it can't be voted on. Only that version:
/// never another one that waits instead, which the human voting may not have read.
fn ballot_box(view: &Value, plan: &str, wanted: u64) -> anyhow::Result<(u64, String)> {
    let pending = view.get("pending").and_then(Value::as_u64);
    let Some(chosen) = version(view, Some(wanted)) else {
        let count = view.get("versions").and_then(Value::as_array).map_or(0, Vec::len);
        if count == 0 {
            bail!("plan {plan} has no version {wanted}; it has no versions yet");
        }
        bail!("plan {plan} has no version {wanted}; it has versions 1 to {count}");
    };
    let status = s(chosen, "status");
    let approval = s(chosen, "approval_id");
    if approval.is_empty() {
        bail!(
            "version {wanted} of plan {plan} has no approval to vote on: policy {} it without one",
            if status == "denied" { "refused" } else { "allowed" }
        );
    }
    if status != "pending" {
        let waiting = match pending {
            Some(p) if p != wanted => format!("; version {p} is"),
            _ => String::new(),
        };
        bail!("version {wanted} of plan {plan} is {status}, not waiting for approval{waiting}");
    }
    Ok((wanted, approval))
}
